"""`python -m backend download`: the SCAIL-2 weights that fit this GPU, fetched from the Hugging Face Hub.

`catalog` names every file (repository, path, size, where the fact came from), `plan` picks the
set for a GPU from `doctor`'s memory estimates and counts what is already on disk, `fetch` gets
the rest with `huggingface_hub` (resumable part files, SHA-256 checked), `command` is the CLI.
"""
