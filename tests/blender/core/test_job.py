"""A job's upload and download progress to a remote worker, as the panel shows it, and where a worker is (plain Python)."""

import pytest

from scail2.core.job import Job, on_this_machine


def test_transfer_progress_shows_in_the_phase_text_and_leaves_the_status():
    job = Job(key="k", spec={})
    job.on_progress({"type": "progress", "phase": "upload", "bytes": 1_500_000, "total": 4_000_000}, now=1.0)
    assert job.status == "submitting"  # not queued yet: the inputs are still going over
    assert job.phase_text() == "Uploading the inputs: 1.5/4.0 MB"
    job.on_progress({"type": "progress", "phase": "upload", "bytes": 4_000_000, "total": 4_000_000}, now=2.0)
    job.status = "running"
    job.on_progress({"type": "progress", "phase": "sample", "segment": 1, "segments": 1, "step": 1, "steps": 2},
                    now=3.0)
    assert job.phase_text() == "Generating: segment 1/1, step 1/2"  # a finished upload says nothing more
    job.on_progress({"type": "progress", "phase": "download", "bytes": 10, "total": 99}, now=4.0)
    assert job.phase_text().startswith("Fetching the results: ") and job.phase == "sample"


def test_a_job_reads_the_workers_events_through_their_records():
    import pytest

    from scail2 import protocol

    job = Job(key="k", spec={})
    started = protocol.Started(job="j1", frames=8, segments=1, warnings=["no driving mask"], noise_only=True)
    job.on_started(protocol.decode_message(protocol.encode_event(started)), now=1.0)
    assert (job.status, job.frames, job.segments, job.warnings, job.noise_only) == (
        "running", 8, 1, ["no driving mask"], True)
    with pytest.raises(protocol.ProtocolError, match="unknown field surprise"):
        job.on_progress({"type": "progress", "phase": "sample", "surprise": 1}, now=2.0)
    with pytest.raises(protocol.ProtocolError, match="frame_ready event: missing field 'path'"):
        job.on_frame({"type": "frame_ready", "index": 0}, now=2.0)


@pytest.mark.parametrize("host, here", [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
                                        ("localhost", True), ("LOCALHOST.", True), ("gpu.localhost", True),
                                        ("192.168.1.20", False), ("10.0.0.5", False), ("gpu-box.studio.lan", False),
                                        ("::ffff:10.0.0.1", False), ("0.0.0.0", False), ("localhost.example.com", False)])
def test_a_worker_on_this_machine_is_told_from_one_elsewhere(host, here):
    assert on_this_machine(host) is here
