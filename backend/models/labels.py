"""What the worker calls its models before any is loaded: plain strings, so `hello` imports no network code."""

TINY_LABEL = "tiny (random weights: output is noise)"
