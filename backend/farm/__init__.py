"""Render-farm dispatch: self-contained job bundles, one per shot or character, and the farm's job descriptions.

`bundle` writes a bundle folder from a job spec (the exported inputs copied in, never hard-linked, the spec
rewritten to bundle-relative paths, the job folder `output/` the farm fills); `templates` writes the
OpenJD job template (AWS Deadline Cloud, `openjd run`) and the Flamenco job (for `scail2.js`, the job
type script beside this file); `run` is what a farm task runs on a bundle; `commands` is the
`python -m backend farm ...` command line.

A whole bundle is one task: the segments of one shot are chained by the history (each starts from the
last frames of the one before), so only whole shots and characters run in parallel.

Standard library only up to the point where `run` hands over to `generate`.
"""
