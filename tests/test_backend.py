"""backend: the device choice, and what a user hears when CuPy cannot reach the GPU.

A fake ``cupy`` module stands in for the real one, so these run on any machine.
"""

import sys
import types

import pytest

from minicount import backend, cli


class FakeCUDARuntimeError(RuntimeError):
    """Shaped like cupy_backends.cuda.api.runtime.CUDARuntimeError: a status and a message."""

    def __init__(self, status, text):
        super().__init__(text)
        self.status = status


def fake_cupy(*, devices=1, error=None, driver=12040, runtime=13000):
    """A module with just the cupy.cuda.runtime calls that backend makes."""

    def get_device_count():
        if error is not None:
            raise error
        return devices

    runtime_api = types.SimpleNamespace(
        getDeviceCount=get_device_count,
        driverGetVersion=lambda: driver,
        runtimeGetVersion=lambda: runtime,
        CUDARuntimeError=FakeCUDARuntimeError,
    )
    module = types.ModuleType("cupy")
    module.cuda = types.SimpleNamespace(runtime=runtime_api)
    return module


INSUFFICIENT = FakeCUDARuntimeError(
    35, "cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version"
)


@pytest.fixture
def with_cupy(monkeypatch):
    def install(module, package="cupy-cuda13x 14.0.1"):
        monkeypatch.setitem(sys.modules, "cupy", module)
        monkeypatch.setattr(backend, "_cupy_package", lambda: package)

    return install


def test_cupy_for_a_newer_cuda_than_the_driver_is_one_line_naming_both(with_cupy):
    with_cupy(fake_cupy(error=INSUFFICIENT, driver=12040, runtime=13000))
    assert not backend.gpu_available()
    with pytest.raises(ValueError) as e:
        backend.resolve_device("gpu")
    message = str(e.value)
    assert "\n" not in message
    assert "cupy-cuda13x 14.0.1" in message and "CUDA 13.0" in message
    assert "driver supports CUDA 12.4" in message
    assert "cupy-cuda12x" in message and "minicount[gpu-cuda12]" in message
    assert backend.resolve_device("auto") == "cpu"  # auto falls back quietly


def test_the_mismatch_is_told_apart_by_the_message_too(with_cupy):
    error = RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")
    with_cupy(fake_cupy(error=error, driver=13000, runtime=13010))
    with pytest.raises(ValueError, match=r"driver supports CUDA 13\.0.*gpu-cuda13"):
        backend.resolve_device("gpu")


def test_a_driver_too_old_for_any_wheel_names_its_package(with_cupy):
    with_cupy(fake_cupy(error=INSUFFICIENT, driver=11080, runtime=12000), "cupy-cuda12x 13.6.0")
    with pytest.raises(ValueError, match=r"CUDA 11\.8 at most.*cupy-cuda11x"):
        backend.resolve_device("gpu")


def test_other_cuda_errors_keep_the_general_message(with_cupy):
    with_cupy(fake_cupy(error=FakeCUDARuntimeError(100, "cudaErrorNoDevice: no CUDA-capable")))
    with pytest.raises(ValueError, match=r"sees no CUDA GPU.*gpu-cuda12.*--device cpu"):
        backend.resolve_device("gpu")
    with_cupy(fake_cupy(devices=0))
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        backend.resolve_device("gpu")


def test_a_working_fake_gpu_resolves(with_cupy):
    with_cupy(fake_cupy(devices=1))
    assert backend.gpu_available() and backend.resolve_device("gpu") == "gpu"
    assert backend.resolve_device("auto") == "gpu"


def test_the_command_line_says_it_in_one_line(with_cupy, capsys, tmp_path):
    with_cupy(fake_cupy(error=INSUFFICIENT))
    code = cli.main(["train", "--steps", "1", "--device", "gpu", "--out", str(tmp_path / "m.npz")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "cupy-cuda13x" in err and "CUDA 12.4" in err
