"""The LoopNav leaderboard: read `loopnav evaluate` outputs, rank them fairly, plot them, and push them to the Hub.

- `results`: find `results_<ts>.json` / `samples_<ts>.jsonl` pairs and group them by what makes numbers comparable
  (data manifest, evaluation size, split); the newest run per model and group is the one shown.
- `bootstrap`: percentile-bootstrap confidence intervals over trajectories.
- `table`: the Tables 1-2 layout (range x model rows, metric x task columns) rendered as rich, markdown, html, json
  or csv.
- `plots`: per-frame metric curves over the return leg, aligned at its end (Figure 4).
- `html`: the page skeleton and style shared by `--format html` and the report, with the leaderboard's sections.
- `show`: rollouts side by side with the ground truth (and a model's reported memories) as MP4, WebP/GIF or PNG.
- `report`: one self-contained results page: data, leaderboard, curves, rollout videos, provenance.
- `paper`: the WorldPack paper's Tables 1-2 and 4, Figures 4-5 and a claims check, as markdown and PNGs.
- `hub`: one-commit upload of results and per-trajectory rows to a Hub dataset repo, with a dataset card.
"""
