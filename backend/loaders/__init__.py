"""Reading weights: checkpoint layouts of the transformer, encoder files, LoRAs, the converter,
and `components`, which puts a job's models together.

Nothing is imported at package level, so `import backend.loaders.errors` stays light.
"""
