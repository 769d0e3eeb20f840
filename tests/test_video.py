"""Video analysis: ``pipe.video`` records and face tracks, ``analyze_video`` files (resume, Ctrl-C, track
summaries), the overlay video and ``faceptor-hf analyze clip.mp4``, on a clip of the shipped portraits
(``video_clips``) with real RetinaFace detection and a tiny untrained Faceptor model."""

import json
import statistics
from collections import Counter

import numpy as np
import pytest
import torch
from transformers import pipeline

from faceptor_hf import FaceAnalysisPipeline, FaceptorImageProcessor, FaceptorModel
from faceptor_hf.commands import main
from faceptor_hf.face_tracking import FaceTracker
from faceptor_hf.video import VideoAnalysisInterrupted, analyze_video, read_records
from faceptor_hf.video_frames import VideoFrames, VideoReadError
from faceptor_hf.visualization import track_color

from conftest import TINY_TASKS, tiny_config
from video_clips import HEAD_SIZE, clip_frames, make_clip

# The tasks a track summarizes (embedding, age, attributes, expression); the 112-px crops keep the clip cheap.
VIDEO_TASKS = TINY_TASKS[:4]
FACE_KEYS = {"box", "score", "keypoints", "tasks", "quality", "track_id"}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("video") / "clip.mp4")


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_video_model")
    torch.manual_seed(0)
    FaceptorModel(tiny_config(tasks=VIDEO_TASKS)).eval().save_pretrained(folder)
    FaceptorImageProcessor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pipe(saved_model):
    return pipeline("face-analysis", model=str(saved_model))


@pytest.fixture(scope="module")
def records(pipe, clip):
    return list(pipe.video(clip.path))


def person_at(face: dict, clip, frame: int) -> str:
    """The person of the clip whose pasted head is nearest the face's box center in that frame."""
    x1, y1, x2, y2 = face["box"]
    center = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    heads = {person: np.array(corner) + np.array(HEAD_SIZE) / 2 for person, corner in clip.positions[frame].items()}
    return min(heads, key=lambda person: np.linalg.norm(heads[person] - center))


def ids_by_person(records, clip) -> dict[str, set[int]]:
    ids = {}
    for record in records:
        for face in record["faces"]:
            ids.setdefault(person_at(face, clip, record["frame_index"]), set()).add(face["track_id"])
    return ids


def test_one_record_per_frame_with_stable_track_ids(records, clip, pipe):
    assert [record["frame_index"] for record in records] == list(range(clip.num_frames))
    np.testing.assert_allclose([record["timestamp"] for record in records],
                               np.arange(clip.num_frames) / clip.fps, atol=1e-3)
    task_names = set(pipe.model.config.task_names)
    for record in records:
        people = clip.people_in(record["frame_index"])
        assert len(record["faces"]) == len(people), record["frame_index"]
        assert {person_at(face, clip, record["frame_index"]) for face in record["faces"]} == people
        for face in record["faces"]:
            assert set(face) >= FACE_KEYS and set(face["tasks"]) == task_names
    assert records[clip.empty_frame]["faces"] == []
    json.dumps(records)
    ids = ids_by_person(records, clip)
    # Exactly one track per person, the same id before and after Grace Hopper's gap and the empty frame.
    assert set(ids) == clip.people and all(len(found) == 1 for found in ids.values())
    assert len(set().union(*ids.values())) == len(clip.people) == 2
    before, after = clip.gap.start - 1, clip.gap.stop
    grace = {face["track_id"] for frame in (before, after) for face in records[frame]["faces"]
             if person_at(face, clip, frame) == "grace_hopper"}
    assert grace == ids["grace_hopper"]


def test_every_start_frame_and_frames_given_as_images(pipe, clip, records):
    frames = clip_frames(clip)
    sparse = list(pipe.video(frames, fps=clip.fps, every=3, start_frame=4))
    assert [record["frame_index"] for record in sparse] == list(range(6, clip.num_frames, 3))
    np.testing.assert_allclose([record["timestamp"] for record in sparse],
                               [record["frame_index"] / clip.fps for record in sparse], atol=1e-6)
    ids = ids_by_person(sparse, clip)
    assert set(ids) == clip.people and all(len(found) == 1 for found in ids.values())
    assert len(set().union(*ids.values())) == 2
    for record in sparse:  # the same faces as in the decoded file, a few pixels of compression apart
        from_file = np.array(sorted(face["box"] for face in records[record["frame_index"]]["faces"]), float)
        given = np.array(sorted(face["box"] for face in record["faces"]), float)
        np.testing.assert_allclose(given.reshape(-1, 4), from_file.reshape(-1, 4), atol=4)
    untracked = list(pipe.video(frames[:1], fps=clip.fps, track=False))
    assert len(untracked) == 1 and untracked[0]["faces"] and "track_id" not in untracked[0]["faces"][0]


def test_bad_sources_and_options_fail_before_decoding(pipe, clip, tmp_path):
    with pytest.raises(VideoReadError, match="fps"):
        pipe.video(clip_frames(clip)[:1])
    with pytest.raises(VideoReadError, match="no such video file"):
        pipe.video(tmp_path / "missing.mp4")
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(VideoReadError, match="notes.mp4: not a video PyAV can open"):
        pipe.video(tmp_path / "notes.mp4")
    with pytest.raises(TypeError, match="face_boxes"):
        pipe.video(clip.path, face_boxes=[[0, 0, 10, 10]])
    with pytest.raises(ValueError, match="every"):
        pipe.video(clip.path, every=0)
    with pytest.raises(KeyError):
        pipe.video(clip.path, tasks=["no_such_task"])
    frames = VideoFrames(iter(clip_frames(clip)[:2]), fps=clip.fps)
    assert len(list(frames.read())) == 2
    with pytest.raises(VideoReadError, match="already read"):
        frames.read()
    probed = VideoFrames(clip.path)
    assert (probed.fps, probed.frame_count, probed.size) == (clip.fps, clip.num_frames, clip.size)


def face(box, embedding=None):
    return {"box": list(map(float, box)),
            "tasks": {} if embedding is None else {"recog": {"embedding": list(map(float, embedding))}}}


def test_tracker_overlap_gap_new_faces_and_embeddings():
    tracker = FaceTracker(max_gap=2)
    assert tracker.update(0, [face([0, 0, 40, 40]), face([100, 0, 140, 40])]) == [1, 2]
    assert tracker.update(1, [face([104, 0, 144, 40]), face([4, 0, 44, 40])]) == [2, 1]  # order does not matter
    assert tracker.update(2, [face([8, 0, 48, 40])]) == [1]
    assert tracker.update(3, []) == []
    # Track 2 went unseen in 2 analyzed frames (max_gap) and moved on at 4 px a frame: it is found where its
    # velocity took it, though it barely overlaps where it was last seen.
    assert tracker.update(4, [face([136, 0, 176, 40]), face([200, 100, 240, 140])]) == [2, 3]
    for frame in (5, 6, 7):
        tracker.update(frame, [])
    assert tracker.update(8, [face([136, 0, 176, 40])]) == [4]  # unseen in 3 > max_gap frames: a new track

    # Between two tracks the face overlaps alike, the embedding decides; without overlap, only a close one matches.
    a, b = np.eye(4)[0], np.eye(4)[1]
    tracker = FaceTracker(embedding_task="recog")
    tracker.update(0, [face([0, 0, 20, 20], a), face([20, 0, 40, 20], b)])
    assert tracker.update(1, [face([10, 0, 30, 20], b)]) == [2]
    assert tracker.update(2, [face([300, 300, 320, 320], a), face([500, 500, 520, 520], np.eye(4)[2])]) == [1, 3]
    boxes_only = FaceTracker()
    boxes_only.update(0, [face([0, 0, 20, 20], a)])
    assert boxes_only.update(1, [face([300, 300, 320, 320], a)]) == [2]


def track_faces(records, track_id):
    return [(record, face) for record in records for face in record["faces"] if face["track_id"] == track_id]


def test_analyze_video_summaries_resume_and_ctrl_c(pipe, clip, records, tmp_path):
    out = tmp_path / "full"
    result = analyze_video(pipe, clip.path, out, progress=False)
    written = list(read_records(result.frames_path))
    assert result.num_frames == len(written) == clip.num_frames and result.resumed_frames == 0
    assert [[f["track_id"] for f in r["faces"]] for r in written] == [[f["track_id"] for f in r["faces"]]
                                                                      for r in records]
    saved = json.loads((out / "tracks.json").read_text())
    assert saved["tracks"] == result.tracks and saved["num_frames"] == clip.num_frames
    assert len(result.tracks) == 2
    task_of = {task.type: task.name for task in pipe.model.config.tasks}
    for track in result.tracks:
        seen = track_faces(written, track["track_id"])
        frames = [record["frame_index"] for record, _ in seen]
        assert track["num_frames"] == len(seen) and (track["first_frame"], track["last_frame"]) == (frames[0],
                                                                                                     frames[-1])
        assert (track["first_time"], track["last_time"]) == (seen[0][0]["timestamp"], seen[-1][0]["timestamp"])
        scores = [face["quality"]["score"] for _, face in seen]
        assert track["best_frame"] == frames[int(np.argmax(scores))] and track["best_quality"] == max(scores)
        vectors = np.array([face["tasks"][track["embedding_task"]]["embedding"] for _, face in seen])
        mean = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).sum(0)
        np.testing.assert_allclose(track["embedding"], mean / np.linalg.norm(mean), atol=1e-5)
        summary = track["tasks"]
        ages = [face["tasks"][task_of["age"]]["age"] for _, face in seen]
        assert summary[task_of["age"]]["median_age"] == pytest.approx(statistics.median(ages), abs=1e-4)
        labels = Counter(face["tasks"][task_of["affect"]]["label"] for _, face in seen)
        assert summary[task_of["affect"]]["label_histogram"] == dict(labels)
        attributes = summary[task_of["biattr"]]["mean_attributes"]
        for name, value in attributes.items():
            assert value == pytest.approx(np.mean([face["tasks"][task_of["biattr"]]["attributes"][name]
                                                   for _, face in seen]), abs=1e-4)

    # A killed run: the first 10 records and half of the 11th. The rerun analyzes the rest, with the same ids.
    lines = (out / "frames.jsonl").read_text().splitlines(keepends=True)
    (out / "frames.jsonl").write_text("".join(lines[:10]) + lines[10][:40])
    resumed = analyze_video(pipe, clip.path, out, progress=False)
    again = list(read_records(resumed.frames_path))
    assert resumed.resumed_frames == 10 and resumed.num_frames == clip.num_frames
    assert [r["frame_index"] for r in again] == list(range(clip.num_frames))
    assert [[f["track_id"] for f in r["faces"]] for r in again] == [[f["track_id"] for f in r["faces"]]
                                                                    for r in written]

    # Ctrl-C while frames are read: complete records stay; the same call with all frames resumes after them.
    frames = clip_frames(clip)

    def interrupted_frames():
        for index, image in enumerate(frames):
            if index == 10:
                raise KeyboardInterrupt
            yield image

    stopped = tmp_path / "stopped"
    with pytest.raises(VideoAnalysisInterrupted) as interrupt:
        analyze_video(pipe, interrupted_frames(), stopped, fps=clip.fps, chunk_size=4, progress=False)
    partial = interrupt.value.analysis
    assert partial.num_frames == 8 and [r["frame_index"] for r in read_records(partial.frames_path)] == list(range(8))
    assert json.loads((stopped / "tracks.json").read_text())["tracks"] == partial.tracks and len(partial.tracks) == 2
    finished = analyze_video(pipe, frames, stopped, fps=clip.fps, chunk_size=4, progress=False)
    assert finished.resumed_frames == 8 and finished.num_frames == clip.num_frames
    assert ids_by_person(read_records(finished.frames_path), clip) == ids_by_person(records, clip)


def test_cli_analyzes_a_video_renders_it_and_resumes(saved_model, clip, tmp_path, capsys, monkeypatch):
    out, overlay = tmp_path / "out", tmp_path / "out" / "overlay.mp4"
    command = ["analyze", str(clip.path), "--model", str(saved_model), "--output-dir", str(out), "--every", "2",
               "--render", str(overlay), "--max-gap", "3"]
    assert main(command) == 0
    stdout = capsys.readouterr().out
    assert "12 frames analyzed (0 already done), 2 face tracks" in stdout
    written = list(read_records(out / "frames.jsonl"))
    assert [record["frame_index"] for record in written] == list(range(0, clip.num_frames, 2))
    tracks = json.loads((out / "tracks.json").read_text())
    assert len(tracks["tracks"]) == 2 and (tracks["every"], tracks["max_gap"]) == (2, 3)

    import av

    with av.open(str(overlay)) as container:
        rendered = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(rendered) == clip.num_frames and rendered[0].shape == (clip.size[1], clip.size[0], 3)
    for face in written[0]["faces"]:  # each face's "#id" tag is drawn above its box in its track's color
        x1, y1 = (int(round(value)) for value in face["box"][:2])
        tag = rendered[0][max(y1 - 16, 0):y1 - 2, x1:x1 + 16].reshape(-1, 3).astype(float)
        distance = np.abs(tag - np.array(track_color(face["track_id"]))).sum(1)
        assert distance.min() < 40 and (distance < 40).sum() > 20

    assert main(command) == 0
    assert "12 frames analyzed (12 already done)" in capsys.readouterr().out

    # Ctrl-C during the second chunk of 3 analyzed frames: exit status 130, the first chunk kept, then resumed.
    analyze_chunk, calls = FaceAnalysisPipeline._video_chunk, []

    def interrupted_chunk(self, *arguments):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return analyze_chunk(self, *arguments)

    monkeypatch.setattr(FaceAnalysisPipeline, "_video_chunk", interrupted_chunk)
    stopped = ["analyze", str(clip.path), "--model", str(saved_model), "--output-dir", str(tmp_path / "stopped"),
               "--every", "2", "--chunk-size", "3"]
    assert main(stopped) == 130
    assert "interrupted: 3 frames written" in capsys.readouterr().err
    assert [r["frame_index"] for r in read_records(tmp_path / "stopped" / "frames.jsonl")] == [0, 2, 4]
    monkeypatch.setattr(FaceAnalysisPipeline, "_video_chunk", analyze_chunk)
    assert main(stopped) == 0 and "12 frames analyzed (3 already done), 2 face tracks" in capsys.readouterr().out
    assert main(["analyze", str(clip.path), "--model", str(saved_model), "--every", "0"]) == 2
    assert "error: --every must be at least 1" in capsys.readouterr().err
