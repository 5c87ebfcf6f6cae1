"""The input checks: what the footage, masks and reference say about the take, before any GPU time.

`run.check_inputs` / `run.run_checks` make an `protocol.InputCheckReport`; `thresholds.LIMITS` is the
one table of what each check accepts, and why.
"""
