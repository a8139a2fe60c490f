"""The `loopnav` command line: the composition root that parses, calls the packages below and prints.

Nothing imports it. Below it: `loopnav_bench` (data, protocol, metrics, evaluation, training dispatch), `leaderboard`
(results, tables, plots, Hub), and the models found through `loopnav_bench.registry`.
"""
