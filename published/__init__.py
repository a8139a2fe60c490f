"""The world models the field publishes (Oasis-500M, WorldMem, NWM's official CDiT), re-implemented in loopnav's code
and checked against golden outputs of their upstream code (`loopnav models check-upstream`)."""
