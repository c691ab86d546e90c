"""What an archive run lists from a folder or a glob: hidden files (macOS's ``._`` copies, a
drive's ``.Trashes``) and an earlier run's outputs below the inputs are not inputs."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

import raypipe
from raypipe.errors import ConfigError
from raypipe.inputs import list_inputs, not_one_video


def _tree(root: Path) -> None:
    for name in ("a.mp4", "._a.mp4", ".Trashes/501/deleted.mp4", "sub/b.MOV", "sub/._b.MOV",
                 "notes.txt", "out/a.mp4", "out/sub/b.MOV"):  # fmt: skip
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_a_folder_lists_neither_hidden_files_nor_an_earlier_runs_outputs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _tree(tmp_path)
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        items = list_inputs(str(tmp_path), str(tmp_path / "out"))
    assert [i.relative_output for i in items] == ["a.mp4", "sub/b.MOV"]
    assert [i.uri for i in items] == [str(tmp_path / "a.mp4"), str(tmp_path / "sub" / "b.MOV")]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("left out 3 hidden file(s) named as videos")
    assert "'.Trashes/501/deleted.mp4'" in lines[0]  # the first, as an example
    assert lines[1].startswith("left out 2 video(s) below the output directory")
    # an output directory elsewhere: nothing left out but the hidden files
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        items = list_inputs(str(tmp_path / "sub"), str(tmp_path / "elsewhere"))
    assert [i.relative_output for i in items] == ["b.MOV"]
    assert len(caplog.records) == 1
    # a folder above the inputs' is no earlier run's: every video is listed (an output
    # that would be its input is refused for that video alone); the inputs' own folder is
    # refused (test_outputs_inside_the_inputs_are_known_through_a_link)
    assert [i.relative_output for i in list_inputs(str(tmp_path / "sub"), str(tmp_path))] == [
        "b.MOV"
    ]


def test_outputs_inside_the_inputs_are_known_through_a_link(tmp_path: Path) -> None:
    """OUTPUT_DIR inside the inputs, one of them named through a link: its videos were
    listed, and every rerun processed the last run's outputs again, one folder deeper."""
    root = tmp_path / "videos"
    _tree(root)
    (tmp_path / "link").symlink_to(root)
    for inputs, output_dir in (
        (tmp_path / "link", root / "out"),
        (root, tmp_path / "link" / "out"),
    ):
        items = list_inputs(str(inputs), str(output_dir))
        assert [i.relative_output for i in items] == ["a.mp4", "sub/b.MOV"], (inputs, output_dir)
    for pattern in (tmp_path / "link" / "**" / "*.mp4", root / "**" / "*.mp4"):
        found = list_inputs(str(pattern), str(tmp_path / "link" / "out"))
        assert [i.relative_output for i in found] == ["a.mp4"]
    # the inputs' own folder, through a link too: refused (each job was to be refused
    # alone, but x.flv's x.mp4 was written among the inputs, and the rerun failed every
    # video: a sweep)
    for inputs, output_dir in ((tmp_path / "link" / "sub", root / "sub"), (root, root)):
        with pytest.raises(ConfigError, match=r"OUTPUT_DIR '.*' is the inputs' folder itself: "
                           r"the outputs would go among the inputs"):  # fmt: skip
            list_inputs(str(inputs), str(output_dir))


def test_a_glob_lists_hidden_files_only_where_it_spells_the_dot(tmp_path: Path) -> None:
    _tree(tmp_path)
    found = [i.relative_output for i in list_inputs(str(tmp_path / "**" / "*.mp4"))]
    assert found == ["a.mp4", "out/a.mp4"]  # no output directory given: out/ is an input
    found = [
        i.relative_output
        for i in list_inputs(str(tmp_path / "**" / "*.mp4"), str(tmp_path / "out"))
    ]
    assert found == ["a.mp4"]
    assert [i.relative_output for i in list_inputs(str(tmp_path / "._*.mp4"))] == ["._a.mp4"]


def test_a_glob_that_matches_folders_lists_the_files_in_them(tmp_path: Path) -> None:
    """``videos/**`` matches ``videos`` and every folder below it besides the files: each
    folder was an input that failed ("is a directory"), and the archive exited 3. A folder
    named as a video is still listed, and fails as a typed error."""
    _tree(tmp_path)
    (tmp_path / "folder.mp4").mkdir()
    found = [i.relative_output for i in list_inputs(str(tmp_path / "sub" / "**"))]
    assert found == ["b.MOV"]  # not sub itself
    found = [i.relative_output for i in list_inputs(str(tmp_path / "*"))]
    assert found == ["a.mp4", "folder.mp4", "notes.mp4"]  # not out/ nor sub/ (notes.txt is
    # a file the pattern names: it fails as not a video)


def test_a_list_whose_videos_share_no_folder_mirrors_their_whole_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listed videos in two buckets, or local ones whose only common folder is ``/``: every
    one failed ("output '/vids/in/a.mp4' is not a relative path inside OUTPUT_DIR"). Their
    outputs mirror their whole paths now; ``..`` in a listed path is resolved first (it
    was refused as escaping OUTPUT_DIR), and relative entries, in a list or a manifest,
    are taken from the current folder (a manifest's raised KeyError)."""
    listed = tmp_path / "list.txt"
    listed.write_text("s3://vids/in/a.mp4\ns3://vids2/k/v01.mp4\n")
    items = list_inputs(str(listed))
    assert [(i.uri, i.relative_output, i.error) for i in items] == [
        ("s3://vids/in/a.mp4", "vids/in/a.mp4", ""),
        ("s3://vids2/k/v01.mp4", "vids2/k/v01.mp4", ""),
    ]
    listed.write_text(f"{tmp_path}/in/../in/a.mp4\n/opt/x.mp4\n")
    items = list_inputs(str(listed))
    assert [(i.uri, i.relative_output, i.error) for i in items] == [
        (f"{tmp_path}/in/a.mp4", f"{str(tmp_path).lstrip('/')}/in/a.mp4", ""),
        ("/opt/x.mp4", "opt/x.mp4", ""),
    ]
    listed.write_text(f"{tmp_path}/in/../in/a.mp4\n{tmp_path}/in/sub/b.mp4\n")
    assert [i.relative_output for i in list_inputs(str(listed))] == ["a.mp4", "sub/b.mp4"]
    manifest = tmp_path / "list.csv"
    manifest.write_text("uri,output\nin/a.mp4,\nin/sub/b.mp4,named.mkv\n")
    monkeypatch.chdir(tmp_path)
    items = list_inputs(str(manifest))
    assert [(i.uri, i.relative_output) for i in items] == [
        (f"{tmp_path}/in/a.mp4", "a.mp4"),
        (f"{tmp_path}/in/sub/b.mp4", "named.mkv"),
    ]
    # a row with no uri was the working directory, and moved every mirrored output a folder
    # down (a sweep); a row of empty cells is no row
    manifest.write_text("uri,output\nin/a.mp4,\n,\n,blank.mp4\n")
    with pytest.raises(ConfigError, match=r"^the manifest's row 2 has no uri \(its other "
                       r"values: 'blank.mp4'\); fill it in, or delete the row$"):  # fmt: skip
        list_inputs(str(manifest))


def test_an_object_store_prefix_is_listed_the_same_way() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    for name in ("a.mp4", "._a.mp4", "out/a.mp4"):
        fs.pipe(f"/bucket/{name}", b"x")
    try:
        items = list_inputs("memory://bucket/", "memory://bucket/out")
        assert [i.relative_output for i in items] == ["a.mp4"]
        assert items[0].uri.endswith("/bucket/a.mp4")
    finally:
        fs.rm("/bucket", recursive=True)


def test_a_folder_or_file_named_with_brackets_is_itself_not_a_glob(tmp_path: Path) -> None:
    """A season's folder ("Season [2020]") or a download named "Title [id].mp4" (as yt-dlp
    names them) read as globs whose brackets match one character: no inputs were found."""
    folder = tmp_path / "Season [2020]"
    folder.mkdir()
    (folder / "Title [dQw4w9].mp4").write_bytes(b"x")
    (tmp_path / "Season 2").mkdir()  # what "[2020]" as a class would have matched instead
    (tmp_path / "Season 2" / "other.mp4").write_bytes(b"x")
    assert [i.relative_output for i in list_inputs(str(folder))] == ["Title [dQw4w9].mp4"]
    one = list_inputs(str(folder / "Title [dQw4w9].mp4"))
    assert [(i.uri, i.relative_output) for i in one] == [
        (str(folder / "Title [dQw4w9].mp4"), "Title [dQw4w9].mp4")
    ]
    # a name that is no file or folder is still a glob
    glob = list_inputs(str(tmp_path / "Season [2]" / "*.mp4"))
    assert [i.relative_output for i in glob] == ["Season 2/other.mp4"]


def test_an_input_raypipe_cannot_write_as_it_is_named_gets_an_mp4_output(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An archive of old videos (.wmv, .flv, .mpg, a camcorder's .mts) failed video by
    video: each output mirrored its input's extension, which raypipe does not write. They
    are .mp4 now, with one line; a manifest's own output is kept as named."""
    from raypipe.distributed.archive import _jobs

    for name in ("old.wmv", "clip.FLV", "tape.mpg", "cam/00001.MTS", "ok.mkv", "master.mxf",
                 "VIDEO_TS/VTS_01_1.VOB"):  # fmt: skip
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    items = list_inputs(str(tmp_path))
    assert [i.relative_output for i in items] == [
        "VIDEO_TS/VTS_01_1.mp4", "cam/00001.mp4", "clip.mp4", "master.mp4", "ok.mkv",
        "old.mp4", "tape.mp4",
    ]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        jobs = _jobs(items, str(tmp_path / "out"))
    assert [j.output_problem for j in jobs] == [""] * 7
    assert [r.getMessage() for r in caplog.records] == [
        "6 input(s) have an extension raypipe does not write (.flv, .mpg, .mts, .mxf, .vob, "
        ".wmv): their outputs are .mp4 files (a CSV manifest's output column names others)"
    ]
    (tmp_path / "old.mp4").write_bytes(b"x")  # old.wmv's output is old.mp4 too
    clash = _jobs(list_inputs(str(tmp_path)), str(tmp_path / "out"))
    (second,) = [j for j in clash if j.error]
    assert second.uri.endswith("old.wmv") and second.output == second.uri, "it has no output"
    assert f"is claimed by 2 inputs: it is written for '{tmp_path / 'old.mp4'}' (its own " in (
        second.error
    )
    assert "its output is .mp4: name it in a CSV manifest's output column" in second.error
    (tmp_path / "old.mp4").unlink()
    (one,) = list_inputs(str(tmp_path / "old.wmv"))  # one file named as INPUTS
    assert (one.uri, one.relative_output) == (str(tmp_path / "old.wmv"), "old.mp4")
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"uri,output\n{tmp_path / 'old.wmv'},kept.wmv\n")
    (named,) = list_inputs(str(manifest))
    assert named.relative_output == "kept.wmv" and not named.renamed
    (job,) = _jobs([named], str(tmp_path / "out"))
    assert "has extension '.wmv'" in job.output_problem  # as named: refused for that video


def test_run_given_a_folder_or_a_pattern_names_the_archive_command(tmp_path: Path) -> None:
    """``raypipe run FOLDER OUT`` said the output "has extension '(none)'" (or, with an
    output file, that the input was a corrupt video); a quoted pattern "does not exist".
    Both now say what they are and give the ``raypipe archive`` command, before any
    work; a folder or file whose name has brackets is what it is."""
    folder = tmp_path / "Season [2020]"
    folder.mkdir()
    (folder / "clip [1].mp4").write_bytes(b"")
    assert "is a folder" in not_one_video(str(folder))
    assert "is a pattern" in not_one_video(str(tmp_path / "*.mp4"))
    assert not_one_video(str(folder / "clip [1].mp4")) == ""
    assert not_one_video(str(tmp_path / "missing.mp4")) == ""  # says it is missing later
    assert "is a folder" in not_one_video("s3://bucket/videos/")
    with pytest.raises(ConfigError) as e:
        raypipe.process_video(str(folder), str(tmp_path / "out"), quiet=True)
    assert str(e.value) == (
        f"input '{folder}' is a folder; `raypipe run` processes one video. "
        f"`raypipe archive '{folder}' OUTPUT_DIR` processes every video it names (resumable)"
    )


def test_a_linked_folder_is_listed_and_a_link_back_up_walked_no_further(tmp_path: Path) -> None:
    """A link to a folder of videos below the inputs was skipped without a word (fsspec's
    ``find`` does not follow it; ``ls in/*/*.mp4`` does; a sweep)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.mp4").write_bytes(b"x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "o.mp4").write_bytes(b"x")
    (tmp_path / "in" / "linked").symlink_to(tmp_path / "other")
    (tmp_path / "in" / "loop").symlink_to(tmp_path / "in")  # back up: no endless walk
    items = list_inputs(str(tmp_path / "in"), str(tmp_path / "out"))
    assert [i.relative_output for i in items] == ["a.mp4", "linked/o.mp4"]


def test_a_server_that_ignores_byte_ranges_is_one_typed_line(
    http_dir: tuple[Path, str],
) -> None:
    """``python -m http.server`` sends the whole file for every ranged read: a file larger
    than fsspec's first read failed inside PyAV's reads, which printed dropped exceptions'
    tracebacks, and the command ended "unexpected" (a sweep)."""
    from raypipe.errors import InputError
    from raypipe.media.probe import probe

    root, base = http_dir
    (root / "big.mp4").write_bytes(os.urandom(6 << 20))  # past fsspec's 5 MB block
    with pytest.raises(InputError, match=r"is served by a server that does not answer "
                       r"byte-range requests .* download it first"):  # fmt: skip
        probe(f"{base}/big.mp4")


NOT_UTF8 = (
    "is not valid UTF-8 (its bytes shown as \\xNN): raypipe keeps paths as UTF-8 text; "
    "rename it in UTF-8 (convmv -f latin1 -t utf8 does)"
)


def test_a_name_that_is_not_utf8_fails_alone_and_run_refuses_it_in_one_line(
    tmp_path: Path, clips: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A Latin-1 name in an archive's folder ended the whole archive as an "unexpected"
    UnicodeEncodeError (its row did not go into Ray's Arrow blocks); `run` said so too, or
    blamed Ray's start for an output's name (the command line Ray gives its workers)."""
    import pyarrow as pa

    from raypipe.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "ok.mp4").write_bytes(b"x")
    latin1 = os.fsdecode(bytes(folder) + b"/caf\xe9.mp4")
    shutil.copy(clips["bframes_aac"], latin1)
    items = list_inputs(str(folder), str(tmp_path / "out"))
    shown = f"{folder}/caf\\xe9.mp4"
    assert [(i.uri, i.relative_output, i.error) for i in items] == [
        (shown, "", f"input '{shown}' {NOT_UTF8}"),
        (str(folder / "ok.mp4"), "ok.mp4", ""),
    ]
    pa.Table.from_pylist([{"uri": i.uri, "error": i.error} for i in items])  # rows Ray can hold
    good = str(clips["bframes_aac"])
    for argv, what in (([latin1, str(tmp_path / "o.mp4")], "input"), ([good, latin1], "output")):
        assert main(["run", *argv, "--quiet"]) == 1
        err = capsys.readouterr().err.strip()
        assert err == f"raypipe: error: ConfigError: {what} '{shown}' {NOT_UTF8}"
    assert main(["probe", latin1]) == 0  # a probe reads it where it is
    assert "video stream 0: h264" in capsys.readouterr().out


def test_a_web_address_is_named_by_its_path_without_its_query(tmp_path: Path) -> None:
    """``.../get?id=5`` made the output ``get?id=5.mp4``, ``sp%20ace.mp4`` kept its ``%20``,
    and ``x.mp4?token=abc`` was said to have an extension raypipe does not write (a sweep)."""
    listed = tmp_path / "list.txt"
    listed.write_text(
        "http://h/v/fs.mp4?token=abc&x=1\nhttp://h/v/get?id=5\nhttp://h/v/sp%20ace.mp4#t=2\n"
    )
    items = list_inputs(str(listed))
    assert [(i.uri, i.relative_output, i.renamed) for i in items] == [
        ("http://h/v/fs.mp4?token=abc&x=1", "fs.mp4", False),
        ("http://h/v/get?id=5", "get.mp4", True),
        ("http://h/v/sp%20ace.mp4#t=2", "sp ace.mp4", False),
    ]


def test_images_a_folder_leaves_out_are_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A folder's archive left out its photos and GIFs without a word (a sweep)."""
    (tmp_path / "in").mkdir()
    for name in ("a.mp4", "b.gif", "c.JPG", ".hidden.png"):
        (tmp_path / "in" / name).write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        items = list_inputs(str(tmp_path / "in"), str(tmp_path / "out"))
    assert [i.relative_output for i in items] == ["a.mp4"]
    assert f"left out 2 image file(s) in '{tmp_path / 'in'}' ('b.gif', ...)" in caplog.text
