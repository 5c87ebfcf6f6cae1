"""From a job's files to its frames: inputs, masks, segments, sampling, the generation job, media I/O.

Nothing is imported at package level, so importing one module costs only its own imports.
"""
