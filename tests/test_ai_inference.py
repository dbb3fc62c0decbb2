"""The inference pipeline's parts that need no platform: grids, channels, metadata, the model
lookup's refusals (against a real MLflow server where MLflow is asked)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from neuronova_lib.ai.inference import (
    InferenceError,
    ServedModel,
    _back_to_reference,
    _channel_order,
    _model_input,
    _predict,
    datasets_from_metadata,
    load_segmenter,
    resolve_model,
)
from neuronova_lib.config import Settings
from neuronova_lib.volume import Volume, instances_json, series_geometry

CHANNELS = ("t1", "t1c", "t2", "flair")


def _study_volume(shape: tuple[int, int, int] = (40, 36, 24),
                  spacing: tuple[float, float, float] = (1.0, 1.0, 1.5)) -> Volume:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-20.0, -18.0, 10.0)
    rng = np.random.default_rng(0)
    array = rng.integers(0, 1000, size=(4, *shape)).astype(np.uint16)
    return Volume(array=array, affine_lps=affine, study_uid="1.2.3", series_uid="1.2.3.1",
                  channels=CHANNELS)


def _blob(shape: tuple[int, int, int]) -> np.ndarray:
    i, j, k = np.indices(shape)
    centre = np.asarray(shape) / 2
    return ((i - centre[0]) ** 2 + (j - centre[1]) ** 2 + ((k - centre[2]) * 1.5) ** 2) < 64


def test_on_the_reference_grid_nothing_is_resampled() -> None:
    volume = _study_volume()
    channels, grid = _model_input(volume, {"channels": ["t1", "t1ce", "t2", "flair"]})
    assert channels.dtype == np.float32 and channels.shape == volume.array.shape
    assert np.array_equal(channels, volume.array.astype(np.float32))
    masks = np.stack([_blob(volume.spatial_shape)] * 3)
    assert _back_to_reference(masks, grid, volume) is not masks
    assert np.array_equal(_back_to_reference(masks, grid, volume), masks)


def test_channels_follow_the_models_order() -> None:
    volume = _study_volume()
    channels, _ = _model_input(volume, {"channels": ["flair", "t1ce", "t2", "t1"]})
    assert np.array_equal(channels[0], volume.array[3])
    assert np.array_equal(channels[1], volume.array[1])
    assert _channel_order({"channels": ["T1", "T1Gd", "T2", "FLAIR"]}) == list(CHANNELS)
    with pytest.raises(InferenceError) as refused:
        _channel_order({"channels": ["t1", "dwi"]})
    assert refused.value.reason == "model_unavailable" and "dwi" in refused.value.message


def test_a_model_spacing_resamples_there_and_the_masks_come_back() -> None:
    volume = _study_volume()
    channels, grid = _model_input(volume, {"spacing_mm": [2.0, 2.0, 2.0]})
    assert grid.spacing == pytest.approx((2.0, 2.0, 2.0))
    assert channels.shape == (4, 20, 18, 18)  # ceil(40·1/2), ceil(36/2), ceil(24·1.5/2)
    assert grid.origin_lps == volume.origin_lps
    # A blob drawn on the model grid comes back to the same place on the T1 grid.
    truth = _blob(volume.spatial_shape)
    on_model = Volume(array=truth.astype(np.float32), affine_lps=volume.affine_lps).resample_to(
        grid, order=0).array > 0.5
    back = _back_to_reference(np.stack([on_model] * 3), grid, volume)
    assert back.shape == (3, *volume.spatial_shape) and back.dtype == np.bool_
    overlap = 2 * (back[0] & truth).sum() / (back[0].sum() + truth.sum())
    assert overlap > 0.9, overlap


def test_a_model_output_of_the_wrong_kind_is_refused() -> None:
    volume = _study_volume()
    channels, grid = _model_input(volume, {})

    def probabilities(array: np.ndarray, *, spacing: tuple[float, float, float]) -> np.ndarray:
        return np.zeros((3, *array.shape[1:]), dtype=np.float32)

    with pytest.raises(InferenceError) as refused:
        _predict(probabilities, channels, grid)  # type: ignore[arg-type]
    assert refused.value.reason == "model_output" and "bool" in refused.value.message


def test_metadata_becomes_datasets_without_bulk_data() -> None:
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    item = ds.to_json_dict()
    item["7FE00010"] = {"vr": "OW", "BulkDataURI": "http://example/bulk"}
    (back,) = datasets_from_metadata([item])
    assert "PixelData" not in back
    assert back.SOPInstanceUID == ds.SOPInstanceUID and back.Rows == ds.Rows
    assert series_geometry(instances_json([back])).shape == (ds.Columns, ds.Rows, 1)


@pytest.mark.e2e
def test_a_model_mlflow_does_not_know_is_refused(
        tmp_path: Path, mlflow_server: str) -> None:
    settings = Settings(home=tmp_path, mlflow_tracking_uri=mlflow_server,
                        model_name="no-such-model")
    with pytest.raises(InferenceError) as refused:
        resolve_model(settings)
    assert refused.value.reason == "model_unavailable"
    assert "no-such-model" in refused.value.message
    with pytest.raises(InferenceError) as refused:
        load_segmenter(ServedModel("brain-tumor-seg", "9", "0123456789abcdef",
                                   "runs:/0123456789abcdef/model", mlflow_server))
    assert refused.value.reason == "model_unavailable"
    assert "could not be loaded" in refused.value.message


@pytest.mark.e2e
def test_model_files_changed_after_approval_are_not_loaded(
        tmp_path: Path, mlflow_server: str) -> None:
    """Anyone who may log to MLflow can overwrite a logged model's files in place: a worker
    loads the served version only if its files are the ones the gate approved."""
    import mlflow
    import mlflow.pytorch
    import torch
    from monai.networks.nets import UNet

    from neuronova_lib.ai import inference, registry
    from neuronova_lib.ai.model_config import ModelConfig
    from neuronova_lib.ai.predict import METADATA_KEY

    settings = Settings(home=tmp_path, mlflow_tracking_uri=mlflow_server)
    torch.manual_seed(3)
    net = UNet(spatial_dims=3, in_channels=4, out_channels=3, channels=(4, 8), strides=(2,))
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("files-changed")
    with mlflow.start_run() as run:
        info = mlflow.pytorch.log_model(net, name="model", serialization_format="pickle",
                                        registered_model_name="files-changed",
                                        metadata={METADATA_KEY: ModelConfig().to_json()})
    version = str(info.registered_model_version)
    uri = f"models:/files-changed/{version}"
    approved = registry.artifact_digest(settings, uri)
    served = ServedModel("files-changed", version, run.info.run_id, uri, mlflow_server,
                         approved)
    assert load_segmenter(served).run_id == run.info.run_id

    client = registry.mlflow_client(settings)
    model_id = registry.logged_model_id(client.get_model_version("files-changed", version))
    assert model_id
    (tmp_path / "evil").mkdir()
    torch.save({"not": "the approved weights"}, tmp_path / "evil" / "model.pth")
    client.log_model_artifact(model_id, str(tmp_path / "evil" / "model.pth"), "data")
    inference._models.clear()  # a fresh worker: nothing loaded yet
    with pytest.raises(InferenceError) as refused:
        load_segmenter(served)
    assert refused.value.reason == "model_unavailable"
    assert "changed after the promotion gate approved them" in refused.value.message
