"""Tests of tfmeta/export/versioning.py: TF Serving layout, no overwrite, nothing half-written."""

import pytest

import toy
from tfmeta.export import existing_versions, export_few_shot_regressor, exporter, next_version
from tfmeta.export import versioning
from tfmeta.export.versioning import staged_version


def _write(root, name="m", content="x"):
    with staged_version(root, name) as (tmp, result):
        (tmp / "saved_model.pb").write_text(content)
    return result


def test_versions_increase_from_one(tmp_path):
    assert next_version(tmp_path / "m") == 1
    assert _write(tmp_path)["version"] == 1
    assert _write(tmp_path)["version"] == 2
    assert existing_versions(tmp_path / "m") == [1, 2]
    assert (tmp_path / "m" / "2" / "saved_model.pb").read_text() == "x"


def test_existing_versions_are_never_overwritten(tmp_path):
    (tmp_path / "m" / "7").mkdir(parents=True)
    (tmp_path / "m" / "7" / "keep").write_text("old")
    (tmp_path / "m" / "notes").mkdir()  # Not a version: ignored, as TF Serving does.
    result = _write(tmp_path, content="new")
    assert result["version"] == 8
    assert (tmp_path / "m" / "7" / "keep").read_text() == "old"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["7", "8", "notes"]


def test_losing_a_race_takes_the_next_version(tmp_path, monkeypatch):
    """Another exporter publishes version 1 between our scan and our rename."""
    real = versioning.next_version
    calls = []

    def racing_next_version(model_dir):
        version = real(model_dir)
        if not calls:
            (model_dir / str(version)).mkdir()
            (model_dir / str(version) / "theirs").write_text("theirs")
        calls.append(version)
        return version

    monkeypatch.setattr(versioning, "next_version", racing_next_version)
    assert _write(tmp_path)["version"] == 2
    assert (tmp_path / "m" / "1" / "theirs").read_text() == "theirs"
    assert calls == [1, 2]


def test_failure_leaves_nothing_behind(tmp_path):
    _write(tmp_path)
    with pytest.raises(RuntimeError, match="injected"):
        with staged_version(tmp_path, "m") as (tmp, _):
            (tmp / "saved_model.pb").write_text("half")
            raise RuntimeError("injected")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1"]


@pytest.mark.parametrize("name", ["", "a/b", "..", None])
def test_bad_names_are_rejected(tmp_path, name):
    with pytest.raises(ValueError, match=r"`name` must be a non-empty directory name.*Received: name="):
        _write(tmp_path, name=name)
    assert list(tmp_path.iterdir()) == []


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    """A real export failing after `tf.saved_model.save` wrote its files."""
    learner = toy.regressor_learner(seed=3, inner_steps=1)
    first = export_few_shot_regressor(learner, tmp_path, "m")
    assert first == tmp_path / "m" / "1" and (first / "saved_model.pb").is_file()
    assert (first / "assets" / "tfmeta.json").is_file()

    def fail(*args, **kwargs):
        raise RuntimeError("disk full (injected)")

    monkeypatch.setattr(exporter, "write_model_card", fail)
    with pytest.raises(RuntimeError, match="injected"):
        export_few_shot_regressor(learner, tmp_path, "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1"]
    monkeypatch.undo()
    assert export_few_shot_regressor(learner, tmp_path, "m") == tmp_path / "m" / "2"
