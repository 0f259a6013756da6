"""--device parsing and availability (README.md, "msmodelslim quant" --device)."""

import pytest

from modelslim_core.devices import check_available, parse_device, resolve_device
from modelslim_core.errors import DeviceError, UsageError
from modelslim_core.runtime.context import DeviceSpec


@pytest.mark.parametrize(
    "text, expected",
    [
        ("cpu", DeviceSpec("cpu", None)),
        (" npu ", DeviceSpec("npu", None)),
        ("npu:", DeviceSpec("npu", None)),
        ("npu: 0 , 1 ", DeviceSpec("npu", (0, 1))),
        ("npu:0,,1", DeviceSpec("npu", (0, 1))),
        ("cuda:1", DeviceSpec("cuda", (1,))),
        ("CPU:0,1", DeviceSpec("cpu", (0, 1))),
    ],
)
def test_valid_device_strings(text, expected):
    assert parse_device(text) == expected


@pytest.mark.parametrize("text", ["", "  ", "gpu", "npu:abc", "npu:0,abc", "npu:,", "npu:-1", "cuda:0,0"])
def test_invalid_device_strings_are_usage_errors(text):
    with pytest.raises(UsageError) as info:
        parse_device(text)
    assert info.value.exit_code == 2


def test_missing_accelerator_is_a_clear_device_error():
    with pytest.raises(DeviceError, match="no CUDA device"):
        check_available(DeviceSpec("cuda", (0,)))


def test_default_device_on_this_machine_is_the_cpu():
    assert resolve_device(None) == DeviceSpec("cpu", None)
    assert str(DeviceSpec("npu", (0, 1))) == "npu:0,1"
