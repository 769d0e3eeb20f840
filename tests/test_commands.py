"""The ``faceptor-hf`` command line (faceptor_hf.commands): analyze end to end with a tiny saved model.

Most runs call ``main`` in this process (a subprocess costs seconds of imports); Ctrl-C and the multi-process run
need real processes.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from faceptor_hf import FaceAnalysisPipeline, __version__
from faceptor_hf.analysis import StemNamer
from faceptor_hf.commands import SUBCOMMANDS, build_parser, main
from faceptor_hf.image_processing_faceptor import decode_mask

from conftest import IMAGES, SIX_TASKS


def analyze(capsys, *arguments) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``faceptor-hf analyze ARGUMENTS`` run in this process."""
    code = main(["analyze", *map(str, arguments)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_lines(stderr: str) -> list[str]:
    """The ``error:`` lines of stderr (model loading may print progress bars there too)."""
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def copy_images(folder: Path) -> Path:
    folder.mkdir()
    for name in ("astronaut.png", "grace_hopper.jpg"):
        shutil.copy(IMAGES / name, folder / name)
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_parser_version_and_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"faceptor-hf {__version__}"
    subparsers = next(action for action in build_parser()._actions if action.dest == "command")
    assert tuple(subparsers.choices) == SUBCOMMANDS == ("analyze", "convert", "export", "train", "prepare-data",
                                                        "evaluate", "index", "demo", "serve")
    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "recog_ms1mv3, age_morph2" in help_text and "align_aflw" in help_text  # --tasks lists the names
    assert "(default: 32)" in help_text and "(default: png)" in help_text


def floats_in(value):
    """Every float in a JSON value."""
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from floats_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from floats_in(item)


def test_analyze_writes_json_overlays_mask_pngs_and_resumes(checkpoint, tmp_path, capsys):
    photos = copy_images(tmp_path / "photos")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes((IMAGES / "grace_hopper.jpg").read_bytes()[:2000])
    out = tmp_path / "out"
    command = [photos, bad, "--model", checkpoint, "--output-dir", out]

    code, stdout, stderr = analyze(capsys, *command)
    assert code == 1, stdout + stderr  # one input failed
    assert "broken.jpg" in stderr and "truncated" in stderr
    record = json.loads((out / "astronaut.json").read_text())
    assert len(record["faces"]) == 1 and "parsing_celebam" in record["faces"][0]["tasks"]
    parsing = record["faces"][0]["tasks"]["parsing_celebam"]
    assert "mask" not in parsing and parsing["mask_file"] == "astronaut.0.parsing_celebam.png"
    assert len(parsing["labels"]) == 19
    mask = PIL.Image.open(out / parsing["mask_file"])
    assert mask.mode == "L" and mask.size == PIL.Image.open(IMAGES / "astronaut.png").size
    assert np.asarray(mask).max() < 19
    assert (out / "astronaut.png").exists() and (out / "grace_hopper.png").exists()
    first = records(out / "results.jsonl")
    assert len(first) == 3
    assert len({r["run_key"] for r in first}) == 1 and len({r["input_key"] for r in first}) == 3
    assert first[0]["faces"][0]["tasks"]["parsing_celebam"] == parsing  # JSONL holds the same compact record
    # Numbers are what they were rounded to (at most 6 decimals), not float32 noise (-0.06594900041818619).
    numbers = list(floats_in(first + [record]))
    assert len(numbers) > 500 and all(float(f"{value:.6f}") == value for value in numbers)
    assert re.search(r"\d\.\d{7,}", (out / "results.jsonl").read_text()) is None

    # Done inputs are skipped; the failed one is tried again.
    code, stdout, stderr = analyze(capsys, *command)
    assert code == 1 and "already done of 3" in stdout and "1 images (1 failed, 2 already done" in stdout, stdout
    assert len(records(out / "results.jsonl")) == 4

    # A file changed on disk is analyzed again; the others stay done.
    os.utime(photos / "grace_hopper.jpg", ns=(time.time_ns(), time.time_ns()))
    bad.write_bytes((IMAGES / "grace_hopper.jpg").read_bytes())
    code, stdout, stderr = analyze(capsys, *command)
    assert code == 0 and "2 images (0 failed, 1 already done of 4" in stdout, stdout
    redone = records(out / "results.jsonl")[4:]
    assert sorted(Path(r["input"]).name for r in redone) == ["broken.jpg", "grace_hopper.jpg"]
    assert all(len(r["faces"]) == 1 for r in redone)

    # Another option: earlier records are not reused, and the run says so.
    code, stdout, stderr = analyze(capsys, *command, "--max-faces", 1, "--no-overlay")
    assert code == 0 and "3 images (0 failed, 0 already done of 6" in stdout, stdout
    assert "ignoring 6 earlier records" in stderr and "--overwrite" in stderr
    code, stdout, stderr = analyze(capsys, *command, "--overwrite", "--no-overlay")
    assert code == 0 and "already done of 0" in stdout and len(records(out / "results.jsonl")) == 3


def test_rle_masks_inline_and_no_files(checkpoint, tmp_path, capsys):
    image = IMAGES / "astronaut.png"
    code, stdout, stderr = analyze(capsys, image, "--model", checkpoint, "--output-dir", tmp_path / "rle",
                                   "--mask-format", "rle", "--no-overlay", "--tasks", "parsing_celebam")
    assert code == 0, stdout + stderr
    mask = json.loads((tmp_path / "rle" / "astronaut.json").read_text())["faces"][0]["tasks"]["parsing_celebam"]["mask"]
    assert mask["size"] == [512, 512] and all(len(run) == 2 for run in mask["counts"])
    assert decode_mask(mask).shape == (512, 512) and not list((tmp_path / "rle").glob("*.parsing_celebam.png"))

    code, stdout, stderr = analyze(capsys, image, "--model", checkpoint, "--output-dir", tmp_path / "bare",
                                   "--no-files", "--tasks", "parsing_celebam,age_morph2")
    assert code == 0, stdout + stderr
    assert sorted(p.name for p in (tmp_path / "bare").iterdir()) == ["results.jsonl"]
    tasks = records(tmp_path / "bare" / "results.jsonl")[0]["faces"][0]["tasks"]
    assert set(tasks) == {"parsing_celebam", "age_morph2"}
    assert tasks["parsing_celebam"]["mask_file"] is None and len(tasks["parsing_celebam"]["labels"]) == 19


def test_list_tasks_and_unknown_task_names(checkpoint, capsys):
    code, stdout, _ = analyze(capsys, "--list-tasks", "--model", checkpoint)
    assert code == 0
    rows = [line.split() for line in stdout.splitlines()]
    assert rows[0] == ["task", "type", "outputs"]
    assert [row[0] for row in rows[1:]] == SIX_TASKS
    assert rows[1] == ["recog_ms1mv3", "recog", "512", "(embedding)"] and rows[-1] == ["align_300w", "align", "68"]

    code, stdout, stderr = analyze(capsys, IMAGES, "--model", checkpoint, "--tasks", "age_morph2", "age_nope")
    assert code == 2 and stdout == ""
    assert error_lines(stderr) == ["error: unknown task 'age_nope'; this model's tasks are: " + ", ".join(SIX_TASKS)]


def test_cuda_requested_without_cuda_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0", "0"):
        # no --model: the device is checked before anything is loaded
        code, _, stderr = analyze(capsys, IMAGES, "--device", device, "--output-dir", tmp_path)
        assert code == 2
        assert stderr == (f"error: `--device {device}` was requested but CUDA is not available on this machine; "
                          "use --device cpu\n")


def test_user_mistakes_are_one_line_errors_and_bugs_are_not(checkpoint, tmp_path, monkeypatch, capsys):
    code, _, stderr = analyze(capsys, IMAGES, "--output-dir", tmp_path)
    (line,) = error_lines(stderr)
    assert code == 2 and "--random-weights" in line and "convert" in line and stderr == line + "\n"
    code, _, stderr = analyze(capsys, IMAGES, "--model", tmp_path / "absent", "--local-files-only")
    assert code == 2 and error_lines(stderr)[0].startswith("error: cannot load model") and len(error_lines(stderr)) == 1
    code, _, stderr = analyze(capsys, tmp_path / "nothing_*.jpg", "--model", checkpoint, "--output-dir", tmp_path)
    assert code == 2 and error_lines(stderr) == [f"error: no input images found in {tmp_path / 'nothing_*.jpg'}"]

    def broken_call(self, *args, **kwargs):
        raise RuntimeError("a bug, not a user mistake")

    monkeypatch.setattr(FaceAnalysisPipeline, "__call__", broken_call)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["analyze", str(IMAGES), "--model", str(checkpoint), "--output-dir", str(tmp_path / "out")])


def test_random_weights_records_are_stamped_untrained(tmp_path, capsys):
    code, stdout, stderr = analyze(capsys, IMAGES / "astronaut.png", "--random-weights", "--tasks", "age_morph2",
                                   "--output-dir", tmp_path, "--no-overlay")
    assert code == 0, stdout + stderr
    assert "WARNING: UNTRAINED" in stderr and "WARNING: UNTRAINED" in stdout
    (record,) = records(tmp_path / "results.jsonl")
    assert record["untrained"] is True and "meaningless" in record["warning"]
    assert json.loads((tmp_path / "astronaut.json").read_text())["untrained"] is True


def test_streams_a_dataset_folder_and_checks_split_and_columns(checkpoint, tmp_path, capsys):
    data = copy_images(tmp_path / "photos")
    out = tmp_path / "out"
    code, stdout, stderr = analyze(capsys, "--dataset", data, "--model", checkpoint, "--output-dir", out,
                                   "--no-overlay")
    assert code == 0, stdout + stderr
    streamed = records(out / "results.jsonl")
    assert sorted(r["input"] for r in streamed) == [f"{data}/train/0", f"{data}/train/1"]
    assert all(len(r["faces"]) == 1 for r in streamed)

    code, _, stderr = analyze(capsys, "--dataset", data, "--split", "validation", "--model", checkpoint)
    assert code == 2 and error_lines(stderr) == [
        f"error: --split validation: dataset {data} has no such split; available splits: train"]
    code, _, stderr = analyze(capsys, "--dataset", data, "--image-column", "picture", "--model", checkpoint)
    assert code == 2 and error_lines(stderr) == [
        f"error: --image-column picture: dataset {data} has no such column; its columns are: image"]


def test_saved_dataset_with_id_column(checkpoint, tmp_path, capsys):
    import datasets

    features = datasets.Features({"image": datasets.Image(), "photo_id": datasets.Value("string"),
                                  "note": datasets.Value("string")})
    rows = {"image": [PIL.Image.open(IMAGES / "astronaut.png"), PIL.Image.open(IMAGES / "grace_hopper.jpg")],
            "photo_id": ["eileen-1", "grace-2"], "note": ["a", "b"]}
    saved = datasets.Dataset.from_dict(rows, features=features)
    saved.save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": saved, "test": saved}).save_to_disk(str(tmp_path / "dict"))
    out = tmp_path / "out"

    code, stdout, stderr = analyze(capsys, "--dataset", tmp_path / "single", "--id-column", "photo_id", "--model",
                                   checkpoint, "--output-dir", out, "--no-overlay", "--tasks", "parsing_celebam")
    assert code == 0, stdout + stderr
    assert [r["input"] for r in records(out / "results.jsonl")] == ["eileen-1", "grace-2"]
    assert json.loads((out / "grace-2.json").read_text())["input"] == "grace-2"
    assert (out / "eileen-1.0.parsing_celebam.png").exists()

    code, stdout, stderr = analyze(capsys, "--dataset", tmp_path / "dict", "--split", "test", "--model", checkpoint,
                                   "--output-dir", out, "--no-files", "--tasks", "age_morph2")
    assert code == 0, stdout + stderr
    assert records(out / "results.jsonl")[-1]["input"] == f"{tmp_path / 'dict'}/test/1"

    mistakes = {
        ("--dataset", tmp_path / "dict", "--split", "val"): "available splits: train, test",
        ("--dataset", tmp_path / "single", "--id-column", "name"): "its columns are: image, photo_id, note",
        ("--dataset", tmp_path / "single", "--split", "train"): "single saved split",
    }
    for arguments, expected in mistakes.items():
        code, _, stderr = analyze(capsys, *arguments, "--model", checkpoint, "--output-dir", out)
        (line,) = error_lines(stderr)
        assert code == 2 and expected in line, stderr


def test_ctrl_c_keeps_written_records_and_resumes(checkpoint, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    copies = 10
    for copy in range(copies):
        shutil.copy(IMAGES / "astronaut.png", photos / f"copy{copy:02d}.png")
    out = tmp_path / "out"
    jsonl = out / "results.jsonl"
    command = [str(photos), "--model", str(checkpoint), "--output-dir", str(out), "--chunk-size", "1",
               "--tasks", "age_morph2", "--no-overlay"]
    # SIGINT must raise KeyboardInterrupt in the child even where this test runs with SIGINT ignored.
    process = subprocess.Popen([sys.executable, "-m", "faceptor_hf.cli", "analyze", *command],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, OMP_NUM_THREADS="1"),
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (jsonl.exists() and jsonl.read_text().count("\n") >= 1):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    written = records(jsonl)  # every line is whole JSON
    assert 1 <= len(written) < copies
    assert (f"interrupted: {len(written)} images written to {jsonl}; run the same command again to resume"
            in stderr.splitlines())

    code, stdout, _ = analyze(capsys, *command)
    assert code == 0 and f"{copies - len(written)} images (0 failed, {len(written)} already done" in stdout, stdout
    assert sorted(r["input"] for r in records(jsonl)) == sorted(str(p) for p in photos.iterdir())


@pytest.mark.slow
def test_shards_across_processes(checkpoint, tmp_path):
    """Two CPU processes (torchrun, as `accelerate launch` starts them) each analyze their own share, and write one
    Parquet shard each that load_results reads as one dataset (tests/test_analysis_results.py checks the table)."""
    from faceptor_hf import load_results
    from faceptor_hf.results_dataset import shard_paths

    out = tmp_path / "out"
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", str(free_port()), "-m", "faceptor_hf.cli", "analyze", str(IMAGES),
                             "--model", str(checkpoint), "--output-dir", str(out), "--no-overlay",
                             "--output-format", "parquet"],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    shards = [[json.loads(line)["input"] for line in (out / f"results.rank{rank}.jsonl").read_text().splitlines()]
              for rank in (0, 1)]
    assert sorted(shards[0] + shards[1]) == sorted(str(p) for p in IMAGES.glob("*.*") if p.suffix != ".md")
    assert shards[0] and shards[1] and not set(shards[0]) & set(shards[1])
    assert [Path(path).name for path in shard_paths(out)] == ["train-00000-of-00002.parquet",
                                                              "train-00001-of-00002.parquet"]
    faces = load_results(out)
    faces_per_input = {record["input"]: len(record["faces"]) for rank in (0, 1)
                       for record in records(out / f"results.rank{rank}.jsonl")}
    assert sorted(faces["source"]) == sorted(name for name, count in faces_per_input.items() for _ in range(count))
    assert f"{len(faces)} faces from {len(faces_per_input)} images" in (out / "README.md").read_text()


def test_stems_are_unique_and_never_look_like_mask_files():
    namer = StemNamer()
    assert [namer(name) for name in ("a/photo.jpg", "b/photo.png", "photo.0.parsing_celebam.png", "x y.jpg")] == [
        "photo", "photo_2", "photo_0_parsing_celebam", "x_y"]


def test_the_command_line_builds_without_the_optional_extras():
    """`pip install faceptor-hf[onnx]` (no datasets, accelerate or training stack) still gets a working CLI."""
    script = ("import sys\n"
              "for name in ('datasets', 'accelerate', 'onnxruntime', 'onnx', 'h5py', 'scipy'):\n"
              "    sys.modules[name] = None\n"
              "from faceptor_hf.commands import build_parser\n"
              "build_parser().parse_args(['train', 'config.yaml'])\n"
              "print('CLI-OK')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "CLI-OK" in result.stdout, result.stderr[-2000:]
