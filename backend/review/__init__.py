"""The review of takes: scores measured on a finished job, flags, the recipe and the HTML report.

Split by role: `take` gathers what a job folder holds (frames, driving clip, masks, reference) as
arrays; `flow` is the optical flow the motion and temporal scores share; `scores/` measures one
thing each; `flags` names the frames far below a take's own median; `scoring` runs them all and
writes the manifest's `review`; `recipe` makes and checks a take's recipe (`generate --recipe`);
`report/` writes the self-contained HTML page; `commands` are the `score` and `report` commands.
Nothing here needs a GPU: a take of 81 frames at 512p scores in seconds on a CPU.
"""

SCORER = "scail2-scores/1"  # bump when a score's definition changes, so old scores can be told apart
