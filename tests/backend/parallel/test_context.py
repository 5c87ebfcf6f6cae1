"""Context parallelism for SCAIL-2: two gloo CPU ranks against one process, and the scheme chosen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from scail_fixtures import REPO

from backend.parallel.context import choose_config

PARITY_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict:
    """The outputs of ranks_parity.py run by torch's launcher as 2 gloo ranks."""
    out = tmp_path_factory.mktemp("ranks") / "outputs.safetensors"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          str(Path(__file__).with_name("ranks_parity.py")), str(out)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return load_file(out)


@pytest.mark.slow
def test_two_ranks_give_the_parity_fixture_output_of_one_process(two_ranks):
    assert two_ranks["padding"][0] == 0  # 114 tokens split evenly
    parallel, single = two_ranks["parallel_fixture"], two_ranks["single_fixture"]
    assert (parallel - single).abs().max() <= PARITY_TOLERANCE
    assert (parallel - two_ranks["expected_fixture"]).abs().max() <= 2e-6  # the fixture README's check


@pytest.mark.slow
def test_a_padded_sequence_on_two_ranks_gives_the_output_of_one_process(two_ranks):
    assert two_ranks["padding"][1] == 1  # 69 tokens: one token of padding
    parallel, single = two_ranks["parallel_padded"], two_ranks["single_padded"]
    assert parallel.shape == single.shape == (16, 3, 4, 12)
    assert (parallel - single).abs().max() <= PARITY_TOLERANCE
    assert single.abs().max() > 0.1  # a real output, not zeros on both sides
    assert (two_ranks["parallel_anything"] - single).abs().max() <= PARITY_TOLERANCE  # Ulysses "anything"


@pytest.mark.parametrize(
    "world, heads, backend, expected",
    [
        (2, 40, None, dict(ulysses_degree=2)),  # padded and masked
        (8, 40, "native", dict(ulysses_degree=8)),
        (8, 40, "flash", dict(ulysses_degree=8, ulysses_anything=True)),  # no mask: uneven splits instead
        (3, 40, "flash", dict(ring_degree=3, ring_anything=True)),  # 3 does not divide 40: ring
        (3, 40, "native", dict(ulysses_degree=3, ulysses_anything=True)),  # ring needs the LSE
    ],
)
def test_the_scheme_follows_the_heads_and_the_attention_backend(world, heads, backend, expected):
    config = choose_config(world, heads, backend)
    settings = dict(ring_degree=1, ulysses_degree=1, ring_anything=False, ulysses_anything=False) | expected
    assert {k: getattr(config, k) for k in settings} == settings


def test_ring_is_refused_without_a_backend_that_returns_the_log_sum_exp():
    with pytest.raises(ValueError, match="log-sum-exp"):
        choose_config(2, 40, "native", strategy="ring")
    assert choose_config(2, 40, "_native_cudnn", strategy="ring").ring_degree == 2
