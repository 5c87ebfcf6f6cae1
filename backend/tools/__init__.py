"""Commands around the pipeline: `doctor` (what this machine and weights folder can run) and `demo`."""
