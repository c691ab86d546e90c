"""The archive's jobs: an input listed twice is refused the second time, under an id of its
own, so its early failure row can never end the first listing's video in the runner."""

from __future__ import annotations

from raypipe.distributed.archive import _jobs
from raypipe.inputs import InputItem
from raypipe.media.probe import make_video_id


def test_an_input_listed_twice_gets_a_refused_job_with_its_own_id() -> None:
    items = [
        InputItem("s3://bucket/a.mp4", "a.mp4"),
        InputItem("s3://bucket/b.mp4", "b.mp4"),
        InputItem("s3://bucket/a.mp4", "a-again.mp4"),
        InputItem("s3://bucket/a.mp4", "a-third.mp4"),
    ]
    jobs = _jobs(items, "/out")
    assert [j.error for j in jobs[:2]] == ["", ""]
    for job in jobs[2:]:
        assert (
            job.error == "input 's3://bucket/a.mp4' is listed more than once; it is processed once"
        )
    ids = [j.video_id for j in jobs]
    assert ids[0] == make_video_id("s3://bucket/a.mp4")  # the first listing keeps the plain id
    assert len(set(ids)) == 4, ids
