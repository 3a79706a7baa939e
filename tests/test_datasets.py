"""Each adapter against a tiny fixture in its official layout: items, targets, folds, groups, problems."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from audio_fixtures import TINY_FEATURES, corrupt, esc50, tone, write_csv

from audiocomp.config import load_config
from audiocomp.datasets import DatasetError, load_index
from audiocomp.features.store import build_store


def cfg_for(dataset: str, root: Path, *extra: str):
    return load_config([], [f"data.dataset={dataset}", f"data.root={root}", *TINY_FEATURES, *extra])


def build(cfg, tmp_path: Path):
    return build_store(load_index(cfg.data), cfg.data, cfg.features, tmp_path / "store", workers=1, progress=False)


def test_esc50_layout_folds_subset_and_bad_files(tmp_path):
    root = esc50(tmp_path / "ESC-50")
    index = load_index(cfg_for("esc50", root).data)
    assert index.classes == ["dog", "rooster", "rain"]
    assert len(index.items) == 14 and {it.fold for it in index.items} == {1, 2, 3, 4, 5}
    assert {it.target for it in index.items} == {0, 1, 2}
    assert any("4-110-A-0.wav" in p and "missing" in p for p in index.problems)
    esc10 = load_index(cfg_for("esc50", root, "data.subset=esc10").data)
    assert esc10.classes == ["dog", "rain"] and {it.target for it in esc10.items} == {0, 1}
    with pytest.warns(UserWarning, match="3-110-A-0.wav"):
        store = build(cfg_for("esc50", root), tmp_path)
    # the corrupt file is skipped and named; the 24-bit/44.1 kHz and stereo/22.05 kHz files decoded
    assert store.report["skipped"] == 1 and "3-110-A-0.wav" in store.report["errors"][0]
    assert len(store.items) == 13 and store.features.shape == (13, 1, 16, 32)
    assert np.isfinite(np.asarray(store.features, dtype=np.float32)).all()
    with pytest.raises(DatasetError, match="subset"):
        load_index(cfg_for("esc50", root, "data.subset=esc20").data)


def test_metadata_path_escaping_root_is_rejected_with_file_and_row(tmp_path):
    root = tmp_path / "ESC-50"
    tone(root / "audio" / "ok.wav")
    write_csv(root / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"],
              [["ok.wav", 1, 0, "dog", True, "1", "A"], ["../../../etc/passwd", 1, 0, "dog", True, "2", "A"]])
    with pytest.raises(DatasetError, match=r"esc50\.csv, row 3: path .*leaves the dataset root"):
        load_index(cfg_for("esc50", root).data)


def test_bad_fold_value_names_file_and_row(tmp_path):
    root = tmp_path / "US8K"
    write_csv(root / "metadata" / "UrbanSound8K.csv",
              ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"],
              [["a.wav", 1, 0, 1, 1, "x", 0, "dog_bark"]])
    with pytest.raises(DatasetError, match=r"UrbanSound8K\.csv, row 2: fold 'x' is not an integer"):
        load_index(cfg_for("urbansound8k", root).data)


def test_urbansound8k_mixed_bit_depths_and_channels(tmp_path):
    root = tmp_path / "UrbanSound8K"
    rows, formats = [], [("PCM_U8", 1, 11025, "wav"), ("PCM_16", 2, 44100, "wav"), ("PCM_24", 1, 48000, "wav"),
                         ("PCM_24", 2, 96000, "wav"), ("FLOAT", 1, 16000, "wav")]
    for i in range(10):
        fold, cls = i % 10 + 1, i % 2
        subtype, ch, sr, _ = formats[i % len(formats)]
        name = f"{100 + i}-{cls}-0-0.wav"
        tone(root / "audio" / f"fold{fold}" / name, sr=sr, channels=ch, subtype=subtype, seconds=0.3 + 0.05 * i)
        rows.append([name, 100 + i, 0, 1, 1, fold, cls, ["air_conditioner", "car_horn"][cls]])
    rows.append(["999-0-0-0.wav", 999, 0, 1, 1, 3, 0, "air_conditioner"])  # missing on disk
    write_csv(root / "metadata" / "UrbanSound8K.csv",
              ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"], rows)
    index = load_index(cfg_for("urbansound8k", root).data)
    assert index.classes == ["air_conditioner", "car_horn"] and len(index.items) == 10
    assert sorted(it.fold for it in index.items) == list(range(1, 11))
    assert len(index.problems) == 1 and "999-0-0-0.wav" in index.problems[0]
    store = build(cfg_for("urbansound8k", root), tmp_path)
    assert store.report["skipped"] == 0 and len(store.items) == 10  # 8/16/24-bit/float, mono/stereo all decode


def test_gtzan_segments_stay_with_their_clip_and_bad_file_is_skipped(tmp_path):
    root = tmp_path / "gtzan"
    for genre in ("blues", "jazz"):
        for i in range(4):
            tone(root / "genres_original" / genre / f"{genre}.{i:05d}.wav", seconds=2.0, freq=200 + 100 * i)
    corrupt(root / "genres_original" / "jazz" / "jazz.00054.wav")
    cfg = cfg_for("gtzan", root, "data.segment_seconds=0.5", "split.test_fraction=0.5", "split.val_fraction=0")
    index = load_index(cfg.data)
    assert index.classes == ["blues", "jazz"] and len(index.items) == 9
    with pytest.warns(UserWarning, match="jazz.00054.wav"):
        store = build(cfg, tmp_path)
    assert store.report["skipped"] == 1 and len(store.items) == 8 * 4  # 2 s clips -> 4 segments of 0.5 s
    assert [it.start_s for it in store.items[:4]] == [0.0, 0.5, 1.0, 1.5]
    from audiocomp.datasets.splits import make_splits

    split = make_splits(store.items, cfg.split, seed=0)["splits"][0]
    clips = lambda rows: {store.items[i].group for i in rows}  # noqa: E731
    assert clips(split["train"]).isdisjoint(clips(split["test"]))
    assert {store.items[i].target for i in split["test"]} == {0, 1}  # stratified by genre


def test_audioset_multilabel_and_missing_report(tmp_path):
    root = tmp_path / "audioset"
    write_csv(root / "class_labels_indices.csv", ["index", "mid", "display_name"],
              [[0, "/m/09x0r", "Speech"], [1, "/m/04rlf", "Music"], [2, "/m/0jbk", "Animal"]])
    comments = ["# Segments csv created Sun Mar  5 10:54:31 2017",
                "# num_ytids=4, num_segs=4, num_unique_labels=3, num_positive_labels=6",
                "# YTID, start_seconds, end_seconds, positive_labels"]
    seg = root / "balanced_train_segments.csv"
    seg.parent.mkdir(parents=True, exist_ok=True)
    seg.write_text("\n".join(comments) + '\n--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/m/04rlf"\n'
                   'abc_DEF-123, 0.000, 10.000, "/m/0jbk"\nmissingYTID, 5.000, 15.000, "/m/04rlf"\n'
                   'xyz, 0.000, 10.000, "/m/unknown"\n')
    write_csv(root / "eval_segments.csv", [], [["evalclip01", "0.000", "10.000", "/m/09x0r"]], comments)
    tone(root / "audio" / "--PJHxphWEs.wav")
    tone(root / "audio" / "Yabc_DEF-123.flac")
    tone(root / "audio" / "evalclip01.wav", channels=2)
    index = load_index(cfg_for("audioset", root).data)
    assert index.multilabel and index.classes == ["Speech", "Music", "Animal"]
    by_path = {it.path: it for it in index.items}
    assert by_path["audio/--PJHxphWEs.wav"].target == (0, 1)
    assert by_path["audio/Yabc_DEF-123.flac"].target == (2,)
    assert by_path["audio/evalclip01.wav"].fold == 2 and by_path["audio/--PJHxphWEs.wav"].fold == 1
    assert index.problems[0].startswith(f"{root}: 1 of 4 listed clips are missing") and "missingYTID" in index.problems[0]
    assert any("row 7" in p and "/m/unknown" in p for p in index.problems)
    store = build(cfg_for("audioset", root), tmp_path)
    assert store.targets().shape == (3, 3) and store.targets().sum() == 4


def test_csv_manifest_relative_to_manifest(tmp_path):
    root = tmp_path / "mine"
    for i in range(6):
        tone(root / "clips" / f"c{i}.wav", freq=300 + 100 * (i % 2))
    write_csv(root / "lists" / "all.csv", ["path", "label", "fold", "group"],
              [[f"../clips/c{i}.wav", ["10", "2"][i % 2], i % 3 + 1, f"spk{i // 2}"] for i in range(6)])
    with pytest.raises(DatasetError, match=r"all\.csv, row 2: path '\.\./clips/c0\.wav' leaves"):
        load_index(cfg_for("csv", root, "data.manifest=lists/all.csv").data)
    write_csv(root / "manifest.csv", ["path", "label", "fold", "group"],
              [[f"clips/c{i}.wav", ["10", "2"][i % 2], i % 3 + 1, f"spk{i // 2}"] for i in range(6)]
              + [["clips/gone.wav", "2", 1, "spk9"]])
    index = load_index(cfg_for("csv", root, "data.manifest=manifest.csv").data)
    assert index.classes == ["2", "10"]  # numeric labels sort as numbers
    assert [it.target for it in index.items] == [1, 0, 1, 0, 1, 0] and index.items[3].group == "spk1"
    assert index.items[2].fold == 3 and "gone.wav" in index.problems[0]


def test_fsdd_and_folder_layouts(tmp_path):
    root = tmp_path / "fsdd"
    for d in range(3):
        for spk in ("jackson", "nicolas"):
            tone(root / "recordings" / f"{d}_{spk}_{d + 3}.wav", freq=300 + 100 * d)
    (root / "recordings" / "README.wav").write_bytes(b"")
    index = load_index(cfg_for("fsdd", root).data)
    assert len(index.items) == 6 and {it.group for it in index.items} == {"jackson", "nicolas"}
    assert len(index.problems) == 1
    folder = load_index(cfg_for("folder", root).data)
    assert folder.classes == ["recordings"]


def test_unknown_dataset_and_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="did you mean 'esc50'"):
        load_index(cfg_for("esc5", tmp_path).data)
    with pytest.raises(DatasetError, match="dataset root not found"):
        load_index(cfg_for("gtzan", tmp_path / "nope").data)
