"""Several GPUs for one job: diffusers context parallelism across ranks started by torch's launcher.

`launch` starts the ranks (`python -m backend generate|serve --gpus N`), `ranks` gives each its
role, `leader` is rank 0's side (it runs the command and shares the transformer), `follower`
the others' (they only run the transformer), `exchange` what passes between them, `context`
the diffusers scheme. Kept import-free so that importing one part never loads the others.
"""
