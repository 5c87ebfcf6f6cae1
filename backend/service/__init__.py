"""The worker the Blender add-on drives: requests, the job queue, the kept model, and its transports.

Nothing is imported at package level: the command line builds `serve`'s options without torch.
"""
