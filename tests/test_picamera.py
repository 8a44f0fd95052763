"""The Pi camera source against a stand-in picamera2 (tests/fake_picamera2.py): what is
configured, which controls are set and when, which rows of the lores stream are used.
What only a real camera shows (focus sharpness, AE/AWB settling times) is not tested here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bin_agent.sources import SourceError
from bin_agent.sources.picamera import PiCameraSource, import_picamera2
from tests import fake_picamera2 as fake
from tests.helpers import TINY_MODELS, base_config, write_toml


@pytest.fixture
def camera_modules(monkeypatch):
    """picamera2 and libcamera as the stand-in; the cameras made are in FakePicamera2.instances."""
    monkeypatch.setitem(sys.modules, "picamera2", fake.picamera2_module())
    monkeypatch.setitem(sys.modules, "libcamera", fake.libcamera_module())
    monkeypatch.setattr(fake.FakePicamera2, "instances", [])
    monkeypatch.setattr(fake.FakePicamera2, "has_autofocus", True)
    monkeypatch.setattr(fake.FakePicamera2, "has_flicker_control", True)
    return fake.FakePicamera2


def started(**options) -> tuple[PiCameraSource, fake.FakePicamera2]:
    source = PiCameraSource(**{"warmup_seconds": 0.2, **options})
    source.start()
    return source, fake.FakePicamera2.instances[-1]


def calls(camera, name):
    return [args for call, args in camera.calls if call == name]


def test_lores_is_the_y_plane_at_the_size_the_camera_configured(camera_modules):
    # Asked 320x240: aligned for a Pi 5 (YUV420 width a multiple of 128) it is 256x240,
    # and each row arrives padded to its stride.
    source, camera = started(main_size=(640, 480), lores_size=(320, 240))
    assert calls(camera, "align_configuration") == [None]
    assert calls(camera, "configure")[0]["lores"]["size"] == (256, 240)
    assert source.lores_size == (256, 240)
    frame = source.read()
    assert frame.lores.shape == (240, 256)
    assert np.all(frame.lores == fake.Y_LEVEL), "padding or U/V rows leaked into the Y plane"
    assert frame.image.shape == (480, 640, 3)
    source.close()
    assert calls(camera, "stop") and calls(camera, "close")


def test_warm_up_passes_before_the_first_frame_is_handed_on(camera_modules):
    source, camera = started(warmup_seconds=0.3)
    (start_time,) = calls(camera, "start")
    first = source.read()
    seq = int(first.image[0, 0, 0])
    assert first.index == 0
    assert camera.frame_times[seq] - start_time >= 0.3
    assert seq >= camera.settle_frames


def test_locked_exposure_and_white_balance_take_the_settled_values(camera_modules):
    source, camera = started(exposure="locked", white_balance="locked")
    lock = calls(camera, "set_controls")[-1]
    assert lock == {
        "AeEnable": False,
        "ExposureTime": 12_345,
        "AnalogueGain": 2.5,
        "AwbEnable": False,
        "ColourGains": (1.9, 1.6),
    }
    assert source.locked_controls == lock
    # Locked before any frame was handed on.
    assert camera.calls[-1][0] == "set_controls"
    source.read()


@pytest.mark.parametrize(("flicker", "period_us"), [("50hz", 10_000), ("60hz", 8_333)])
def test_flicker_keeps_auto_exposure_to_whole_periods_of_the_mains_lamps_flicker(camera_modules, flicker, period_us):
    """Lamps on 50 Hz mains flicker at 100 Hz: libcamera's manual flicker mode with a 10 ms
    period (8.333 ms at 60 Hz), set with the configuration, before the first frame."""
    _, camera = started(flicker=flicker, af_mode="continuous")
    controls = calls(camera, "create_video_configuration")[0]["controls"]
    assert controls["AeFlickerMode"] == fake.AeFlickerModeEnum.Manual
    assert controls["AeFlickerPeriod"] == period_us
    assert camera.controls_set["AeFlickerPeriod"] == period_us, "configured, so it holds from the first frame"


def test_flicker_off_or_a_libcamera_without_the_control_sets_none(camera_modules, monkeypatch, caplog):
    """Off (the default) sets nothing; asked on a libcamera without the control (an older OS),
    the camera starts without it and one warning says how to get it."""
    _, camera = started(af_mode="continuous")
    assert "AeFlickerMode" not in calls(camera, "create_video_configuration")[0]["controls"]
    monkeypatch.setattr(fake.FakePicamera2, "has_flicker_control", False)
    with caplog.at_level("WARNING"):
        source, camera = started(flicker="50hz", af_mode="continuous")
    assert "AeFlickerMode" not in calls(camera, "create_video_configuration")[0]["controls"]
    assert [r.getMessage() for r in caplog.records if "AeFlickerMode" in r.getMessage()] == [
        "camera.flicker = '50hz': this camera's libcamera has no AeFlickerMode control; running without "
        "flicker avoidance (update the OS: sudo apt full-upgrade)"
    ]
    source.read()


def test_auto_exposure_and_white_balance_lock_nothing(camera_modules):
    source, camera = started(exposure="auto", white_balance="auto", af_mode="continuous")
    assert calls(camera, "set_controls") == []
    assert source.locked_controls == {}


@pytest.mark.parametrize(
    "af_mode, configured, after_start",
    [
        ("manual", {"AfMode": fake.AfModeEnum.Manual, "LensPosition": 2.5}, []),
        ("continuous", {"AfMode": fake.AfModeEnum.Continuous}, []),
        ("auto", {}, [{"AfMode": fake.AfModeEnum.Auto, "AfTrigger": fake.AfTriggerEnum.Start}]),
    ],
)
def test_autofocus_modes(camera_modules, af_mode, configured, after_start):
    _, camera = started(af_mode=af_mode, lens_position=2.5)
    controls = calls(camera, "create_video_configuration")[0]["controls"]
    assert {k: v for k, v in controls.items() if k != "FrameRate"} == configured
    assert controls["FrameRate"] == 10.0
    assert calls(camera, "set_controls") == after_start


def test_auto_focus_warm_up_lasts_until_the_scan_ends(camera_modules, monkeypatch):
    # A scan longer than the warm-up: the first frame comes after it, with the lens focused.
    monkeypatch.setattr(fake.FakePicamera2, "scan_frames", 40)  # 0.4 s at 10 ms per frame
    source, camera = started(af_mode="auto", warmup_seconds=0.1)
    first = source.read()
    seq = int(first.image[0, 0, 0])
    assert camera.metadata_of(seq)["AfState"] == fake.AfStateEnum.Focused


def test_auto_focus_that_fails_is_reported_and_does_not_hang(camera_modules, monkeypatch, caplog):
    monkeypatch.setattr(fake.FakePicamera2, "scan_result", fake.AfStateEnum.Failed)
    source, _ = started(af_mode="auto", warmup_seconds=0.1)
    assert "autofocus found no focus" in caplog.text and 'af_mode = "manual"' in caplog.text
    source.read()


@pytest.mark.parametrize("af_mode", ["manual", "auto", "continuous"])
def test_a_camera_without_autofocus_gets_no_focus_controls(camera_modules, monkeypatch, af_mode):
    monkeypatch.setattr(fake.FakePicamera2, "has_autofocus", False)
    _, camera = started(af_mode=af_mode)
    controls = calls(camera, "create_video_configuration")[0]["controls"]
    assert set(controls) == {"FrameRate"}
    assert calls(camera, "set_controls") == []


def test_the_main_stream_is_copied_only_for_the_frames_whose_image_is_read(camera_modules):
    """An idle bin copies only the lores stream of each frame; the main stream of a
    frame (the one the trigger fires on) is copied when its image is read, from that
    frame's own request, which then goes straight back to the camera. Every request
    is given back once, and metadata is read only during the warm-up."""
    source, camera = started()
    warm_up = len(camera.calls)
    images = {}
    for k in range(10):
        frame = source.read()
        if k in (3, 7):  # the frames the trigger fired on
            images[k] = frame.image
    source.close()
    after = camera.calls[warm_up:]
    seqs = [args[0] for call, args in after if call == "make_array" and args[1] == "lores"]
    assert len(seqs) == 10
    copied = [args[0] for call, args in after if call == "make_array" and args[1] == "main"]
    assert copied == [seqs[3], seqs[7]]
    assert [int(images[k][0, 0, 0]) for k in (3, 7)] == [seqs[3] % 256, seqs[7] % 256]
    assert sorted(args for call, args in after if call == "release") == seqs
    assert [call for call, _ in after if call == "get_metadata"] == []


def test_a_frame_s_image_is_its_own_and_its_request_goes_back_once_copied(camera_modules):
    source, camera = started()
    first = source.read()
    start = len(camera.calls)
    image = first.image
    assert first.image is image  # copied once
    (seq,) = [args[0] for call, args in camera.calls[start:] if call == "make_array" and args[1] == "main"]
    assert int(image[0, 0, 0]) == seq % 256
    # Given back right after the copy, not held until the next frame.
    assert camera.calls[start:] == [("make_array", (seq, "main")), ("release", seq)]
    second = source.read()
    assert [call for call, args in camera.calls if call == "release" and args == seq] == ["release"]
    assert int(second.image[0, 0, 0]) == (seq + 1) % 256
    source.close()


def test_an_image_read_after_the_next_frame_is_a_clear_error_not_another_frame(camera_modules):
    source, _ = started()
    first = source.read()
    source.read()
    with pytest.raises(SourceError, match="image of frame 0 was asked for after the next frame was read"):
        _ = first.image
    source.close()


def test_close_gives_a_held_request_back_before_stopping(camera_modules):
    source, camera = started()
    frame = source.read()
    seq = [args[0] for call, args in camera.calls if call == "make_array"][-1]
    source.close()
    names = [call for call, _ in camera.calls]
    assert ("release", seq) in camera.calls
    assert camera.calls.index(("release", seq)) < names.index("stop")
    with pytest.raises(SourceError):
        _ = frame.image


def test_the_agent_classifies_the_frame_the_trigger_fired_on_with_one_copy(camera_modules, tmp_path):
    """The whole loop on the stand-in camera: frames flow (lores only), a classification
    is asked for, and the agent sorts one item from the frame it was asked on, copying
    that frame's main stream once; every request goes back to the camera."""
    import threading

    from bin_agent import preflight
    from bin_agent.agent import build_agent
    from tests.helpers import wait_for

    data = base_config(tmp_path, mqtt=False)
    data["trigger"]["mode"] = "manual"
    data["camera"] = {"source": "picamera2", "warmup_seconds": 0.1}
    agent = build_agent(preflight.load_dict(data, base_dir=tmp_path))
    runner = threading.Thread(target=agent.run)
    runner.start()
    try:
        assert wait_for(lambda: agent.frames_seen >= 5, 10)
        agent.trigger.request()
        assert wait_for(lambda: agent.items_sorted == 1, 15)
    finally:
        agent.stop()
        runner.join(30)
    (camera,) = fake.FakePicamera2.instances
    lores = [args[0] for call, args in camera.calls if call == "make_array" and args[1] == "lores"]
    main = [args[0] for call, args in camera.calls if call == "make_array" and args[1] == "main"]
    released = [args for call, args in camera.calls if call == "release"]
    assert len(main) == 1 and main[0] in lores, "one copy of the main stream, of a frame the agent read"
    assert len(lores) >= agent.frames_seen >= 5
    # Every request given back once: the warm-up's (metadata only) and each frame's.
    warm_up = [args for call, args in camera.calls if call == "get_metadata"]
    assert sorted(released) == sorted(warm_up + lores)


# --------------------------------------------------------------------------- import failures


def test_import_error_is_exit_78_with_the_install_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "libcamera", fake.libcamera_module())
    with pytest.raises(SourceError) as info:
        import_picamera2()
    assert info.value.exit_code == 78
    assert "apt install -y python3-picamera2" in str(info.value)


NUMPY_ABI = (
    "numpy.dtype size changed, may indicate binary incompatibility. Expected 96 from C header, got 88 from PyObject"
)


@pytest.fixture
def broken_picamera2(tmp_path):
    """A picamera2 on the path that fails to import the way the apt one does under numpy 2."""
    site = tmp_path / "site"
    (site / "picamera2").mkdir(parents=True)
    (site / "picamera2" / "__init__.py").write_text(f"raise ValueError({NUMPY_ABI!r})\n")
    (site / "libcamera.py").write_text("class Transform:\n    pass\ncontrols = None\n")
    return site


def test_numpy_abi_clash_is_exit_78_with_the_numpy_fix(monkeypatch, broken_picamera2):
    monkeypatch.syspath_prepend(str(broken_picamera2))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    monkeypatch.delitem(sys.modules, "libcamera", raising=False)
    with pytest.raises(SourceError) as info:
        import_picamera2()
    message = str(info.value)
    assert info.value.exit_code == 78
    assert "numpy.dtype size changed" in message and 'pip install "numpy<2"' in message
    assert "\n" not in message


@pytest.mark.parametrize("command", [["run", "--config"], ["check-config"]])
def test_agent_with_a_broken_picamera2_exits_78_with_one_line(tmp_path, broken_picamera2, command):
    data = base_config(tmp_path, model=TINY_MODELS / "tiny_uint8.tflite", mqtt=False)
    data["camera"]["source"] = "picamera2"
    config = write_toml(tmp_path / "agent.toml", data)
    result = subprocess.run(
        [sys.executable, "-m", "bin_agent", *command, str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(broken_picamera2)},
    )
    assert result.returncode == 78, result.stderr
    ours = [line for line in result.stderr.splitlines() if not line.startswith("INFO: ")]
    assert len(ours) == 1 and "Traceback" not in result.stderr, result.stderr
    assert 'pip install "numpy<2"' in ours[0] and "ValueError" in ours[0]


# ---------------------------------------------------------------------- sensor mode (issue 23, item 3)


@pytest.mark.parametrize(
    ("modes", "expected"),
    [(fake.IMX219_MODES, (1640, 1232)), (fake.IMX708_MODES, (2304, 1296))],
    ids=["camera-module-2", "camera-module-3"],
)
def test_the_sensor_reads_its_whole_field_of_view_at_a_small_main_size(camera_modules, monkeypatch, modes, expected):
    # Left to picamera2, 640x480 on a Camera Module 2 is the IMX219's 640x480 mode: a
    # 1280x960 centre crop of the 3280x2464 array (picamera2 #683, #1233).
    monkeypatch.setattr(fake.FakePicamera2, "modes", modes)
    source, camera = started(main_size=(640, 480))
    (asked,) = [args["sensor"] for args in calls(camera, "create_video_configuration")]
    assert asked["output_size"] == expected
    width = max(mode["crop_limits"][2] for mode in modes)
    height = max(mode["crop_limits"][3] for mode in modes)
    assert camera.camera_config["sensor"]["crop_limits"][2:] == (width, height), "the field of view is cropped"
    source.close()


def test_the_full_field_mode_is_fast_enough_for_the_frame_rate():
    modes = [
        {"size": (1640, 1232), "fps": 5.0, "crop_limits": (0, 0, 3280, 2464)},
        {"size": (3280, 2464), "fps": 21.0, "crop_limits": (0, 0, 3280, 2464)},
        {"size": (640, 480), "fps": 100.0, "crop_limits": (1000, 752, 1280, 960)},
    ]
    from bin_agent.sources.picamera import full_field_mode

    assert full_field_mode(modes, 10.0)["size"] == (3280, 2464)
    assert full_field_mode([{"format": "YUYV"}], 10.0) is None  # a camera that names no modes


# ---------------------------------------------------------------------- a camera that stops (issue 23, item 2)


def test_a_camera_that_stops_delivering_frames_fails_the_read_and_still_closes(camera_modules, monkeypatch):
    # picamera2 leaves the timed-out capture job queued, and stop() (itself a job)
    # waits behind it for ever: doctor hung, start-up hung until TimeoutStartSec.
    source, camera = started()
    monkeypatch.setattr(fake.FakePicamera2, "stall_after", camera.seq + 1)
    source.read()
    with pytest.raises(SourceError, match="no frame"):
        source.read()
    source.close()  # the fake's stop() raises after stop_hang_seconds if a job is still queued
    names = [name for name, _ in camera.calls]
    assert names.index("cancel_all_and_flush") < names.index("stop")
    assert calls(camera, "close")


@pytest.mark.parametrize("frames_before_the_stall", [2, 40], ids=["in the warm-up", "while running"])
def test_a_camera_that_stops_delivering_frames_is_reported_before_its_stop_can_hang(
    camera_modules, monkeypatch, tmp_path, mosquitto, subscriber_factory, caplog, frames_before_the_stall
):
    """After a frame timeout a Pi 4's camera driver may never return from stopping the
    stream, and libcamera's stop holds the interpreter lock, so nothing runs after it
    (picamera2 #1264, #1275). The retained state says ``camera_error`` before the source
    is closed, and the log says what a hang there means. Before: the state stayed
    ``running`` (published only after the close) until the broker's will said offline."""
    import threading

    from bin_agent import preflight
    from bin_agent.agent import build_agent
    from tests.helpers import wait_for

    stop_blocks = threading.Event()
    monkeypatch.setattr(fake.FakePicamera2, "stop_blocks", stop_blocks)
    monkeypatch.setattr(fake.FakePicamera2, "stall_after", frames_before_the_stall)
    sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/state")
    data = base_config(tmp_path, port=mosquitto.port)
    data["trigger"]["mode"] = "manual"
    data["camera"] = {"source": "picamera2", "warmup_seconds": 0.1, "frame_timeout_seconds": 0.5}
    agent = build_agent(preflight.load_dict(data, base_dir=tmp_path))
    assert agent.mqtt is not None and agent.mqtt.wait_connected(10)
    exit_codes: list[int] = []
    runner = threading.Thread(target=lambda: exit_codes.append(agent.run()))
    runner.start()
    try:
        assert wait_for(lambda: any(("stop", None) in c.calls for c in fake.FakePicamera2.instances), 15)
        states = [json.loads(m.payload)["status"] for m in sub.on("/state")]
        assert wait_for(lambda: "camera_error" in [json.loads(m.payload)["status"] for m in sub.on("/state")], 3), (
            f"while stop() hangs the dashboard reads {states}"
        )
        assert "only a reboot frees it" in caplog.text
    finally:
        stop_blocks.set()
        runner.join(30)
    assert exit_codes == [1]
    assert (agent.frames_seen > 0) == (frames_before_the_stall > 20), "the stall came where the test says"
