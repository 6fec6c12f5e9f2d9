"""The launch code shared by `cupy` and `cuda-emu`, checked without any compiler or GPU.

A recording backend stands in for the final launch, so these tests see exactly what a kernel
would receive: entry point, grid, block, contiguous arrays and fixed-width scalars.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from dualnet import backend
from dualnet.backends import launch
from dualnet.backends.cupy import CupyBackend
from dualnet.kernels import cuda


class Recorder(launch.ConvKernelBackend):
    name = "recorder"
    xp = np

    def __init__(self):
        self.launches = []

    def _launch(self, entry, grid, block, args):
        self.launches.append((entry, grid, block, args))


@pytest.mark.parametrize("total, block, max_grid, expected", [
    (1, 256, 4096, (1, 256)),
    (256, 256, 4096, (1, 256)),
    (257, 256, 4096, (2, 256)),
    (10**9, 256, 4096, (4096, 256)),
    (100, 32, 2, (2, 32)),
])
def test_launch_config(total, block, max_grid, expected):
    assert launch.launch_config(total, block, max_grid) == expected


@pytest.mark.parametrize("dtype, suffix", [(np.float32, "f32"), (np.float64, "f64")])
def test_what_a_kernel_receives(dtype, suffix):
    rec = Recorder()
    x = np.zeros((2, 3, 9, 8), dtype=dtype)[:, :, ::2, :]  # strided: (2, 3, 5, 8)
    cols = rec.im2col(x, 3, 2, 1, 1)
    assert cols.shape == (2, 3 * 3 * 2, 5 * 9) and cols.dtype == dtype
    [(entry, grid, block, args)] = rec.launches
    assert entry == f"im2col_{suffix}"
    assert (grid, block) == launch.launch_config(cols.size, rec.block, rec.max_grid)
    arrays, scalars = args[:2], args[2:]
    assert arrays[1] is cols
    assert arrays[0].flags.c_contiguous and np.array_equal(arrays[0], x)
    assert all(type(s) is np.int64 for s in scalars)
    # total, C, H, W, k_h, k_w, pad, stride, H_out, W_out: conv.cu's GEOMETRY_PARAMS order.
    assert [int(s) for s in scalars] == [cols.size, 3, 5, 8, 3, 2, 1, 1, 5, 9]


def test_pooling_passes_zero_padding_and_an_int64_argmax():
    rec = Recorder()
    out, argmax = rec.maxpool_forward(np.zeros((1, 2, 4, 4), np.float32), 2, 2, 2)
    assert argmax.dtype == np.int64 and out.shape == argmax.shape == (1, 2, 2, 2)
    rec.maxpool_backward(out, argmax, (1, 2, 4, 4), 2, 2, 2)
    (e1, _, _, a1), (e2, _, _, a2) = rec.launches
    assert (e1, e2) == ("maxpool_forward_f32", "maxpool_backward_f32")
    assert a1[1] is out and a1[2] is argmax
    assert int(a1[3 + 6]) == 0  # pad
    assert a2[1] is argmax


def test_empty_outputs_launch_nothing():
    rec = Recorder()
    rec.avgpool_forward(np.zeros((0, 2, 4, 4)), 2, 2, 2)
    assert rec.launches == []


@pytest.mark.parametrize("call, error, message", [
    (lambda r: r.im2col(np.zeros((1, 1, 4, 4), np.int32), 2, 2, 0, 2),
     TypeError, r"im2col \(recorder kernel\): x must be float32 or float64, got int32"),
    (lambda r: r.im2col([[1.0]], 1, 1, 0, 1),
     TypeError, "x must be a numpy.ndarray, got builtins.list"),
    (lambda r: r.im2col(np.zeros((4, 4)), 2, 2, 0, 2),
     ValueError, "x must be 4-D, got shape"),
    (lambda r: r.maxpool_forward(np.zeros((1, 1, 5, 5)), 2, 2, 2),
     ValueError, "output height is not integral"),
    (lambda r: r.im2col(np.zeros((1, 1, 5, 5)), 6, 2, 0, 2),
     ValueError, r"window 6 is larger than the padded input height \(5 \+ 2\*0\)"),
    (lambda r: r.depthwise_forward(np.zeros((1, 2, 4, 4)), np.zeros((3, 1, 3, 3)),
                                   np.zeros(3), 1, 1, 4, 4),
     ValueError, r"w must have shape \(C\*m, 1, HH, WW\) for C=2 channels"),
    (lambda r: r.depthwise_forward(np.zeros((1, 2, 4, 4)), np.zeros((2, 1, 3, 3), np.float32),
                                   np.zeros(2), 1, 1, 4, 4),
     TypeError, r"depthwise_forward \(recorder kernel\): dtype mismatch"),
    (lambda r: r.depthwise_forward(np.zeros((1, 2, 4, 4)), np.zeros((2, 1, 3, 3)),
                                   np.zeros(2), 1, 1, 5, 4),
     ValueError, r"output size \(5, 4\) does not match the geometry's \(4, 4\)"),
    (lambda r: r.im2col(np.zeros((1, 1, 4, 4)), 2, 2, -1, 2),
     ValueError, "pad must be an integer >= 0"),
    (lambda r: r.im2col(np.zeros((1, 1, 4, 4)), 2, 2, 0, 0),
     ValueError, "stride must be an integer >= 1"),
    (lambda r: r.col2im(np.zeros((1, 4, 3)), (1, 1, 4, 4), 2, 2, 0, 2),
     ValueError, r"cols must have shape \(1, 4, 4\), got \(1, 4, 3\)"),
    (lambda r: r.col2im(np.zeros((1, 4, 4)), (1, 4, 4), 2, 2, 0, 2),
     ValueError, r"x_shape must be \(N, C, H, W\)"),
    (lambda r: r.maxpool_backward(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2), np.int32),
                                  (1, 1, 4, 4), 2, 2, 2),
     TypeError, "argmax must be int64, got int32"),
    (lambda r: r.avgpool_backward(np.zeros((1, 1, 3, 3)), (1, 1, 4, 4), 2, 2, 2),
     ValueError, r"dout must have shape \(1, 1, 2, 2\)"),
])
def test_bad_input_raises_before_any_launch(call, error, message):
    rec = Recorder()
    with pytest.raises(error, match=message):
        call(rec)
    assert rec.launches == []


class FakeRawModule:
    """Stands in for cupy.RawModule: records compilation and launches."""

    compiled = []

    def __init__(self, code, options):
        FakeRawModule.compiled.append(options)
        self.code = code
        self.launches = []

    def get_function(self, name):
        assert f" {name[:-4]}_##suffix(" in self.code  # a real entry point of conv.cu
        return lambda grid, block, args: self.launches.append((name, grid, block, args))


def test_the_cupy_launch_compiles_once_lazily_and_passes_tuples(monkeypatch):
    monkeypatch.setattr(FakeRawModule, "compiled", [])
    fake_cupy = SimpleNamespace(RawModule=FakeRawModule, ndarray=np.ndarray,
                                ascontiguousarray=np.ascontiguousarray, empty=np.empty)
    be = CupyBackend(fake_cupy)
    assert FakeRawModule.compiled == [], "nothing compiles before the first launch"
    x = np.zeros((1, 1, 4, 4), np.float32)
    be.im2col(x, 2, 2, 0, 2)
    be.avgpool_forward(x, 2, 2, 2)
    assert FakeRawModule.compiled == [cuda.NVRTC_OPTIONS]
    (e1, grid, block, _), (e2, *_) = be._module.launches
    assert (e1, e2) == ("im2col_f32", "avgpool_forward_f32")
    assert grid == (1,) and block == (be.block,)


def _fake_cupy(*, device_count=None, error=None, driver=13000, runtime=13020):
    class CUDARuntimeError(RuntimeError):
        pass

    def get_device_count():
        if error:
            raise CUDARuntimeError(error)
        return device_count

    rt = SimpleNamespace(CUDARuntimeError=CUDARuntimeError, getDeviceCount=get_device_count,
                         driverGetVersion=lambda: driver, runtimeGetVersion=lambda: runtime)
    return SimpleNamespace(__version__="14.2.0", cuda=SimpleNamespace(runtime=rt))


@pytest.mark.parametrize("fake, reason", [
    (_fake_cupy(error="cudaErrorInsufficientDriver: ...", driver=0),
     "no NVIDIA driver is installed"),
    (_fake_cupy(error="cudaErrorInsufficientDriver: ...", driver=12040),
     "the NVIDIA driver is too old: it supports CUDA 12.4, CuPy 14.2.0 needs CUDA 13.2"),
    (_fake_cupy(error="cudaErrorNoDevice: no CUDA-capable device is detected"),
     "no CUDA device answers: cudaErrorNoDevice"),
    (_fake_cupy(device_count=0), "reports no device"),
])
def test_device_problems_are_explained(fake, reason):
    assert reason in cuda.device_problem(fake)


def test_a_working_device_is_no_problem():
    assert cuda.device_problem(_fake_cupy(device_count=1)) is None


@pytest.mark.gpu
def test_cupy_backend_runs_conv_cu_on_the_device():
    be = backend.get("cupy")
    assert "compute capability" in be.kernels()
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    cols = be.im2col(be.asarray(x), 3, 3, 1, 1)
    assert isinstance(cols, be.xp.ndarray) and cols.dtype == np.float32
    be.synchronize()
    np.testing.assert_array_equal(be.to_numpy(cols),
                                  backend.get("numpy").im2col(x, 3, 3, 1, 1))
