"""What rank 0 sends: keyword arguments described as JSON and rebuilt in order, nothing pickled."""

from __future__ import annotations

import json

import pytest
import torch

from backend.parallel.exchange import _dtype, describe, rebuild


def test_a_transformer_call_is_described_as_json_and_rebuilt():
    a, b = torch.randn(16, 2, 4, 6), torch.randn(7, 32, dtype=torch.bfloat16)
    kwargs = {"x": [a, a], "context": [b], "t": torch.tensor([617.0]), "replace_flag": True,
              "history_mask": None, "shift": 2.5}
    description, tensors = describe(list(kwargs.values()))
    assert len(tensors) == 4 and json.loads(json.dumps(description)) == description
    rebuilt = dict(zip(kwargs, rebuild(description, iter(tensors))))
    assert rebuilt["x"][1] is a and rebuilt["context"][0] is b
    assert rebuilt["replace_flag"] is True and rebuilt["history_mask"] is None and rebuilt["shift"] == 2.5


def test_only_plain_values_and_tensors_are_sent():
    with pytest.raises(TypeError, match="dict"):
        describe([{"a": 1}])
    with pytest.raises(ValueError, match="dtype"):
        _dtype("torch.nn")
    assert _dtype("torch.bfloat16") is torch.bfloat16
