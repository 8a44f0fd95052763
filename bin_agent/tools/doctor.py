"""``bin-agent doctor``: is this machine ready to run the bin?

Each check tries the real thing on the machine it runs on, through the same
code the agent uses: the configured frame source delivers a frame, the model
loads and classifies it, the pin factory claims each configured pin, the state
directory takes a write, the state database is whole and takes a write (and how
many events wait in it), the broker answers a CONNECT with the configured
credentials. One :class:`Check` per line::

    ok    camera       replay: first frame 512x384 after 0.02 s
    warn  servo-pwm    lgpio times servo pulses in software: the servo may jitter; ...
    fail  broker       127.0.0.1:1883: cannot connect (ConnectionRefusedError: ...)

``warn`` is something that works but should be fixed; ``fail`` is something
the agent cannot run with. Run it with the service stopped: a running agent
holds the camera and the pins.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import platform
import shutil
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .. import preflight
from ..config import Config, ConfigError, pins_in_use

Status = Literal["ok", "warn", "fail"]

ONLY_64BIT = (
    "this is a 32-bit Python (a 32-bit OS): bin-agent needs a 64-bit OS "
    "(Raspberry Pi OS 64-bit); LiteRT has no 32-bit ARM build"
)

FACTORY_NAMES = {
    "LGPIOFactory": "lgpio",
    "RPiGPIOFactory": "rpigpio",
    "PiGPIOFactory": "pigpio",
    "NativeFactory": "native",
    "MockFactory": "mock",
}

MIN_FREE_BYTES = 20 * 1024 * 1024
"""Below this the state directory fails the check: the outbox needs room to grow."""
LOW_FREE_BYTES = 200 * 1024 * 1024
"""Below this it warns."""
SYNC_PROBES = 5
"""Writes of 4 KiB each synced to the state directory: what one item's record sync costs the card."""
SLOW_SYNC_SECONDS = 0.1
"""A sync slower than this warns: the agent syncs an item's record right after the servo's
command (docs/failures.md), and a servo starts to move an item within about this time, so a
power cut during a slower sync may leave an item sorted but not counted."""
BROKER_TIMEOUT_SECONDS = 10.0
DATABASE_BUSY_SECONDS = 0.25
"""How long the state database check waits for the write lock: a running agent holds it for
one item's transaction (milliseconds); longer, it is "in use", and the agent never waits long
for the doctor."""


def python_is_64bit() -> bool:
    """A 64-bit interpreter. Not ``platform.machine()``: a 32-bit OS with a
    64-bit kernel (the default on older Pi images) says ``aarch64`` there."""
    return struct.calcsize("P") == 8


@dataclass(frozen=True)
class Check:
    """The result of one check."""

    name: str
    status: Status
    detail: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.name:<12}  {self.detail}"

    def as_dict(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "detail": self.detail}


def run_checks(config_path: Path) -> list[Check]:
    """Every check, in the order the agent meets the parts."""
    return list(_checks(config_path))


def _checks(config_path: Path) -> Iterator[Check]:
    yield check_python()
    yield check_numpy()
    config: Config | None
    try:
        config = preflight.load(config_path)
        config_check = Check("config", "ok", f"{config_path}: valid")
    except ConfigError as exc:
        config_check = Check("config", "fail", f"{config_path}: {'; '.join(exc.problems)}")
        try:  # if only the model is wrong, the other parts can still be checked
            config = preflight.load(config_path, model=False)
        except ConfigError:
            config = None
    yield check_picamera2(config)
    yield check_litert()
    yield config_check
    if config is None:
        return
    camera, camera_image = check_camera(config)
    yield camera
    yield check_model(config, camera_image)
    yield check_speed(config)
    factory_check, factory = open_pin_factory(config)
    yield factory_check
    chosen = None
    if factory is not None:
        chosen = factory_name(factory)
        try:
            yield from check_pins(config, factory)
        finally:
            factory.close()
    yield check_servo_pwm(config, chosen)
    if config.actuator.kind in ("servo", "flaps") and config.actuator.servo_drive != "gpiozero":
        yield check_servo_drive(config)
    yield check_clock()
    yield check_state_dir(Path(config.agent.state_dir))
    yield check_state_database(Path(config.agent.state_dir))
    if config.capture.enabled:
        yield check_capture_folder(config)
    yield check_broker(config)


# ---------------------------------------------------------------------- the Python side


def check_python() -> Check:
    where = f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}"
    if not python_is_64bit():
        return Check("python", "fail", f"{ONLY_64BIT} ({where})")
    return Check("python", "ok", f"64-bit {where}")


def _apt_picamera2() -> Path | None:
    """Where picamera2 lies if it is the OS's (apt's) package, built against the OS's numpy."""
    spec = importlib.util.find_spec("picamera2")
    if spec is None or spec.origin is None:
        return None
    origin = Path(spec.origin)
    return origin if "dist-packages" in origin.parts else None


def check_numpy() -> Check:
    try:
        import numpy
    except Exception as exc:  # a broken install raises more than ImportError
        return Check("numpy", "fail", f"cannot import numpy ({type(exc).__name__}: {exc})")
    where = Path(numpy.__file__).parent.parent
    detail = f"numpy {numpy.__version__} ({where})"
    apt = _apt_picamera2()
    if int(numpy.__version__.split(".")[0]) >= 2 and apt is not None:
        return Check(
            "numpy",
            "warn",
            (
                f"{detail} with the OS's picamera2 ({apt.parent}), whose simplejpeg/av are built "
                f"against numpy 1.x: importing it fails. Fix: {_pip()} install 'numpy<2'"
            ),
        )
    return Check("numpy", "ok", detail)


def _version(distribution: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:  # e.g. an apt package without metadata
        return "(version unknown)"


def _pip() -> str:
    return str(Path(sys.executable).with_name("pip"))


def picamera2_import_problem() -> str | None:
    """Why ``import picamera2`` fails in this Python, and the fix; ``None`` if it imports
    (the agent's own check: ``sources.picamera.import_picamera2``, which catches more than
    ImportError: the OS's picamera2 under numpy 2 raises ValueError)."""
    from ..sources import SourceError
    from ..sources.picamera import import_picamera2

    try:
        import_picamera2()
    except SourceError as exc:
        return str(exc)
    return None


def check_picamera2(config: Config | None) -> Check:
    needed = config is None or config.camera.source == "picamera2"
    problem = picamera2_import_problem()
    if problem is not None:
        if needed:
            return Check("picamera2", "fail", problem)
        if importlib.util.find_spec("picamera2") is None:
            return Check("picamera2", "ok", 'not installed; not needed (camera.source = "replay")')
        return Check("picamera2", "warn", f'not needed now (camera.source = "replay"), but: {problem}')
    import picamera2

    from ..sources.picamera import MIN_PICAMERA2, version_tuple

    version = _version("picamera2")
    where = f"picamera2 {version} imports ({Path(picamera2.__file__).parent})"
    floor = ".".join(map(str, MIN_PICAMERA2))
    if version_tuple(version) < MIN_PICAMERA2:
        # Without wait(timeout=) (0.3.17) and cancel_all_and_flush() (0.3.20) a camera
        # that stops delivering frames hangs the agent instead of failing it.
        return Check(
            "picamera2",
            "fail" if needed else "warn",
            f"{where}, older than {floor}: a stalled camera would hang the agent. "
            "Fix: sudo apt update && sudo apt install --only-upgrade python3-picamera2",
        )
    return Check("picamera2", "ok", where)


def check_litert() -> Check:
    from ..classify.runtime import RuntimeUnavailable, interpreter_class

    try:
        name, _ = interpreter_class()
    except RuntimeUnavailable as exc:
        return Check("litert", "fail", str(exc))
    return Check("litert", "ok", f"{name} {_version(name.replace('_', '-'))}")


# ---------------------------------------------------------------------- camera and model


def check_camera(config: Config) -> tuple[Check, Any]:
    """Open the configured frame source, read one frame, close it. Returns the frame's
    image too (read before the source is closed: a camera copies it out only on demand)."""
    from ..agent import StartupError, build_source

    source_name = config.camera.source
    try:
        source = build_source(config)
    except StartupError as exc:
        return Check("camera", "fail", f"{source_name}: {exc}"), None
    started = time.monotonic()
    try:
        source.start()
        frame = source.read()
        image = None if frame is None else frame.image
    except Exception as exc:  # SourceError, and whatever a camera library raises
        return Check("camera", "fail", f"{source_name}: {type(exc).__name__}: {exc}"), None
    finally:
        try:
            source.close()
        except Exception:
            pass
    seconds = time.monotonic() - started
    if image is None:
        return Check("camera", "fail", f"{source_name}: started but delivered no frame"), None
    height, width = image.shape[:2]
    return Check("camera", "ok", f"{source_name}: first frame {width}x{height} after {seconds:.2f} s"), image


def check_model(config: Config, camera_image: Any) -> Check:
    """Load the configured model and classify the camera's image (or a grey image)."""
    import numpy as np

    from ..agent import start_classifier
    from ..classify.classifier import ModelFilesError
    from ..classify.runtime import RuntimeUnavailable

    try:
        # As the agent starts: the deployed model, else (broken) the fallback it would sort with.
        classifier, problem = start_classifier(config)
    except (ModelFilesError, RuntimeUnavailable) as exc:
        return Check("model", "fail", str(exc) if str(config.model.path) in str(exc) else f"{config.model.path}: {exc}")
    if problem is not None:
        return Check("model", "fail", problem)
    model = classifier.files.model
    name = model.name if model == config.model.path else f"{model.parent.name}/{model.name} (deployed)"
    image = camera_image if camera_image is not None else np.full((240, 320, 3), 128, np.uint8)
    what = "the camera frame" if camera_image is not None else "a grey test image"
    try:
        result = classifier.classify(image)
    except Exception as exc:
        return Check("model", "fail", f"{name}: classifying {what} fails ({type(exc).__name__}: {exc})")
    return Check(
        "model",
        "ok",
        (
            f"{name} ({classifier.version}): {what} is {result.label} "
            f"{result.confidence:.2f} in {result.preprocess_ms + result.inference_ms:.0f} ms "
            f"({result.views} view(s))"
        ),
    )


SPEED_ITEMS = 3
SPEED_GAP_SECONDS = 0.3
"""Items are timed after this much idleness: a thread pool that has gone to sleep must wake."""


def check_speed(config: Config) -> Check:
    """Items (preprocessing and every view) with 1, 2 (and 4) interpreter threads, taking
    turns, each after an idle gap as in a bin: which ``model.num_threads`` is fastest here, and
    whether an item fits in a frame at ``camera.fps``. ``bin-agent bench`` has the rest."""
    from ..classify.classifier import ModelFilesError
    from ..classify.runtime import RuntimeUnavailable
    from .bench import time_items_by_threads

    try:
        times = time_items_by_threads(config, SPEED_ITEMS, SPEED_GAP_SECONDS)
    except (ModelFilesError, RuntimeUnavailable) as exc:
        return Check("speed", "fail", f"{config.model.path.name}: {exc}")
    medians = {threads: figures.median for threads, figures in times.by_threads.items()}
    best = times.best_num_threads
    views = times.views
    configured = config.model.num_threads
    shown = ", ".join(f"{n} thread(s) {ms:.0f} ms" for n, ms in medians.items())
    detail = f"one item ({views} view(s)): {shown}; fastest: num_threads = {best}"
    budget = 1000.0 / config.camera.fps
    if medians[best] > budget:
        return Check(
            "speed",
            "warn",
            f"{detail}; slower than a frame at camera.fps = {config.camera.fps:g} ({budget:.0f} ms): "
            "items wait (fewer model.views, or a faster board)",
        )
    mine = medians.get(configured)
    # 15 % and 2 ms: less is the noise of three items on a busy machine.
    if mine is not None and mine > 1.15 * medians[best] and mine - medians[best] > 2.0:
        return Check("speed", "warn", f"{detail}, model.num_threads = {configured} is slower: set it to {best}")
    return Check("speed", "ok", detail)


# ---------------------------------------------------------------------- pins


def factory_name(factory: Any) -> str:
    return FACTORY_NAMES.get(type(factory).__name__, type(factory).__name__)


def open_pin_factory(config: Config) -> tuple[Check, Any]:
    """The configured pin factory (for ``default``: the one gpiozero picks), or ``None``."""
    from ..actuators.sorter import ActuatorError, make_pin_factory

    configured = config.actuator.pin_factory
    if configured in ("lgpio", "default"):
        _lgpio_workdir()
    try:
        factory = make_pin_factory(configured, config.actuator.gpiochip)
        if factory is None:  # "default": the factory gpiozero itself picks
            from gpiozero import Device

            Device.ensure_pin_factory()
            factory, Device.pin_factory = Device.pin_factory, None
    except ActuatorError as exc:
        return Check("pin-factory", "fail", f"actuator.pin_factory: {exc}"), None
    except Exception as exc:  # gpiozero's BadPinFactory and what the libraries raise
        return Check(
            "pin-factory",
            "fail",
            (f'actuator.pin_factory = "default": gpiozero finds no pin factory ({type(exc).__name__}: {exc})'),
        ), None
    import gpiozero

    chosen = factory_name(factory)
    shown = chosen if configured == chosen else f"{configured} -> {chosen}"
    chip = getattr(factory, "_chip", None)  # LGPIOFactory's /dev/gpiochipN
    if isinstance(chip, int):
        shown += f" on /dev/gpiochip{chip}"
    return Check(
        "pin-factory",
        "ok",
        f"{shown} ({type(factory).__name__}; gpiozero {_version('gpiozero')} "
        f"in {Path(gpiozero.__file__).parent.parent})",
    ), factory


def _lgpio_workdir() -> None:
    """lgpio creates its notification FIFO on import, in ``$LG_WD`` or else the
    working directory, and fails where it cannot write (gpiozero #1106, lg #22).
    The unit sets LG_WD; a doctor started by hand (``sudo -u bin-agent`` from
    someone's home directory) gets a temporary one, or its pin check would fail
    where the service's would not."""
    if "LG_WD" not in os.environ:
        workdir = tempfile.mkdtemp(prefix="bin-agent-doctor-lgpio-")
        atexit.register(shutil.rmtree, workdir, ignore_errors=True)
        os.environ["LG_WD"] = workdir


KERNEL_DRIVEN = ("kernel_pwm", "pca9685")
"""Servo drives whose pins belong to a kernel driver (the SoC's PWM; the I2C
controller): claiming them as GPIO inputs would take them from it until reboot."""


def _kernel_driver_of(config: Config, key: str) -> str | None:
    """The kernel driver that owns the pin named by ``key``, if any."""
    driver = _servo_driver(config)
    servo_pin = key == "actuator.servo.pin" or (key.startswith("actuator.flaps.") and key.endswith(".pin"))
    if driver in KERNEL_DRIVEN and servo_pin:
        return driver
    return next((name for name in KERNEL_DRIVEN if name in key), None)


def check_pins(config: Config, factory: Any) -> Iterator[Check]:
    """Claim and release each configured pin (as an input: nothing moves)."""
    for key, number in pins_in_use(config).items():
        owner = _kernel_driver_of(config, key)
        if owner is not None:
            yield Check(f"gpio{number}", "ok", f"{key}: GPIO{number} belongs to {owner}: not claimed")
            continue
        try:
            pin = factory.pin(number)
            function = pin.function
            pin.close()
        except Exception as exc:
            yield Check(f"gpio{number}", "fail", f"{key}: GPIO{number} cannot be claimed ({type(exc).__name__}: {exc})")
        else:
            yield Check(f"gpio{number}", "ok", f"{key}: GPIO{number} claimed ({function}) and released")


def _servo_driver(config: Config) -> str:
    """What times the servo pulses: the servo drive, or the pin factory of the gpiozero drive
    (the one table of drives is :mod:`bin_agent.actuators.drives`)."""
    from ..actuators.drives import pulse_timer

    return pulse_timer(config.actuator)


def check_servo_pwm(config: Config, chosen_factory: str | None) -> Check:
    """How the servo pulses are timed; ``chosen_factory``: the factory that
    loaded (``None``: none did)."""
    from ..actuators.drives import HARDWARE_TIMED, NO_PWM_FACTORIES, SOFTWARE_TIMED_FACTORIES

    kind = config.actuator.kind
    if kind not in ("servo", "flaps"):
        return Check("servo-pwm", "ok", f'no servo (actuator.kind = "{kind}")')
    driver = _servo_driver(config)
    if driver == "default":
        if chosen_factory is None:
            return Check("servo-pwm", "warn", "cannot tell: gpiozero found no pin factory")
        driver = chosen_factory
    if driver in NO_PWM_FACTORIES:
        return Check(
            "servo-pwm",
            "fail",
            f"{driver} has no PWM: the servo cannot move. Fix: set "
            "actuator.pin_factory to a factory with PWM (pigpio on a Pi 4)",
        )
    if driver in SOFTWARE_TIMED_FACTORIES:
        return Check(
            "servo-pwm",
            "warn",
            (
                f"{driver} times servo pulses in software: the servo may jitter. Hardware-timed: "
                "pigpio (Pi 4), kernel_pwm or pca9685 (Pi 5)"
            ),
        )
    if driver in HARDWARE_TIMED:
        return Check("servo-pwm", "ok", f"{driver}: hardware-timed pulses")
    if driver == "mock":
        return Check("servo-pwm", "ok", "mock pins: no real servo")
    return Check("servo-pwm", "warn", f"{driver}: unknown PWM timing")


def check_servo_drive(config: Config) -> Check:
    """``kernel_pwm``: the PWM block (found by its device), each servo pin's channel, and
    write access to it; ``pca9685``: the board's ``MODE1`` register read over I2C.

    Nothing moves: no channel is exported, no register written. Run inside the
    unit's sandbox (``bin-agent-doctor.service``) it sees what the agent will:
    with ``ProtectKernelTunables=yes`` /sys is read-only there.
    """
    actuator = config.actuator
    if actuator.servo_drive == "pca9685":
        from ..actuators.pca9685 import Pca9685Error, read_mode1

        board = actuator.pca9685
        where = f"PCA9685 at 0x{board.address:02x} on /dev/i2c-{board.i2c_bus}"
        try:
            mode1 = read_mode1(board.i2c_bus, board.address)
        except Pca9685Error as exc:
            return Check("servo-drive", "fail", f"actuator.pca9685: {exc}")
        return Check("servo-drive", "ok", f"{where}: MODE1 = 0x{mode1:02x}")
    from ..actuators import kernel_pwm

    try:
        chip = kernel_pwm.find_chip(actuator.kernel_pwm.chip, kernel_pwm.SYSFS_PWM)
        pins = [actuator.servo.pin] if actuator.kind == "servo" else [f.pin for f in actuator.flaps.values()]
        channels = {pin: kernel_pwm.channel_for_pin(chip, pin) for pin in pins}
    except kernel_pwm.KernelPwmError as exc:
        return Check("servo-drive", "fail", f"actuator.kernel_pwm.chip: {exc}")
    device = kernel_pwm.device_of(chip) or "device unknown"
    used = ", ".join(f"GPIO{pin} -> channel {channel}" for pin, channel in channels.items())
    where = f"{chip} ({device}): {used}"
    if os.statvfs(chip).f_flag & os.ST_RDONLY:
        return Check(
            "servo-drive",
            "fail",
            f"{where}: /sys is read-only here (systemd's ProtectKernelTunables=yes): the agent cannot "
            "export the channel. Fix: sudo bash scripts/install-pi.sh --only unit (adds the "
            "kernel-pwm drop-in for this config)",
        )
    targets = []
    for channel in channels.values():
        exported = chip / f"pwm{channel}"
        targets += [exported / "period", exported / "duty_cycle", exported / "enable"] if exported.is_dir() else []
    targets.append(chip / "export")
    denied = [str(path) for path in targets if not os.access(path, os.W_OK)]
    if denied:
        return Check("servo-drive", "fail", f"{where}: not writable: {', '.join(denied)}; {kernel_pwm.ACCESS_FIX}")
    return Check("servo-drive", "ok", f"{where}: writable")


# ---------------------------------------------------------------------- state and broker


def check_clock() -> Check:
    """Whether NTP has set the wall clock (:mod:`bin_agent.clock`). A warning, not a failure:
    the bin sorts and counts right either way; what it cannot do is tell the right time."""
    from ..clock import describe, synchronised

    synced = synchronised()
    if synced is False:
        return Check(
            "clock",
            "warn",
            describe(synced) + ". Fix: a network that reaches an NTP server (timedatectl timesync-status), "
            "or a Pi 5 with its RTC battery",
        )
    return Check("clock", "ok", describe(synced))


def check_state_dir(path: Path) -> Check:
    """The directory takes a durable write, and has room to grow."""
    if not path.is_dir():
        parent = next((p for p in path.parents if p.exists()), Path("/"))
        if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
            return Check("state-dir", "ok", f"{path} does not exist yet; the agent creates it")
        return Check(
            "state-dir",
            "fail",
            (
                f"{path} does not exist and {parent} is not writable. Fix: "
                f"sudo install -d -o bin-agent -g bin-agent -m 0750 {path}"
            ),
        )
    syncs: list[float] = []
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-") as probe:
            for _ in range(SYNC_PROBES):
                probe.write(b"bin-agent doctor\n".ljust(4096))
                probe.flush()
                started = time.perf_counter()
                os.fsync(probe.fileno())
                syncs.append(time.perf_counter() - started)
    except OSError as exc:
        return Check("state-dir", "fail", f"{path} is not writable ({type(exc).__name__}: {exc})")
    free = shutil.disk_usage(path).free
    syncs.sort()
    detail = (
        f"{path} writable, {free / 1e6:,.0f} MB free, a sync {syncs[len(syncs) // 2] * 1000:.1f} ms "
        f"(slowest of {len(syncs)}: {syncs[-1] * 1000:.1f} ms)"
    )
    if free < MIN_FREE_BYTES:
        return Check("state-dir", "fail", f"{detail}: the outbox needs room")
    if free < LOW_FREE_BYTES:
        return Check("state-dir", "warn", f"{detail}: low")
    if syncs[-1] > SLOW_SYNC_SECONDS:
        return Check(
            "state-dir",
            "warn",
            f"{detail}: slower than {SLOW_SYNC_SECONDS * 1000:.0f} ms, the time a servo takes to start moving an "
            "item; a power cut during an item's sync may then leave it sorted but not counted (a faster card)",
        )
    return Check("state-dir", "ok", detail)


def check_state_database(state_dir: Path) -> Check:
    """The state database (outbox, counts, history): it opens, ``PRAGMA quick_check`` passes,
    it takes a write (``BEGIN IMMEDIATE`` then ``ROLLBACK``: nothing is written), and how many
    events wait to be published. Safe beside a running agent: reads do not block its writes in
    WAL mode, and the write lock is waited for :data:`DATABASE_BUSY_SECONDS` at most; held by
    the agent longer, the database is "in use", not failing."""
    import sqlite3

    from ..agent import DATABASE_NAME
    from ..store import is_corruption

    path = state_dir / DATABASE_NAME
    if not path.exists() and not path.is_symlink():
        return Check("state-db", "ok", f"{path} does not exist yet; the agent creates it")
    if not path.is_file():
        return Check("state-db", "fail", f"{path} is not a file (a folder, or a link to nothing)")
    damaged = f"{path}: damaged" + " ({}): the agent moves it aside at start and starts a fresh one"
    size = path.stat().st_size
    if size < 100:  # shorter than SQLite's header; SQLite itself would take 0 bytes for an empty database
        return Check("state-db", "fail", damaged.format(f"truncated to {size} bytes"))
    try:
        # mode=rw: never created here; the timeout is SQLite's busy wait for the write lock.
        db = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=DATABASE_BUSY_SECONDS, isolation_level=None
        )
    except sqlite3.Error as exc:
        return Check("state-db", "fail", f"{path}: cannot open ({exc})")
    try:
        try:
            problems = [str(row[0]) for row in db.execute("PRAGMA quick_check").fetchall() if row[0] != "ok"]
        except sqlite3.DatabaseError as exc:  # not a database, malformed, cannot open its WAL
            if is_corruption(exc):
                return Check("state-db", "fail", damaged.format(str(exc)))
            hint = ""
            if (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF in (8, 14):  # READONLY, CANTOPEN
                hint = f": a read-only card, or no write permission in {state_dir} for its -wal and -shm files"
            return Check("state-db", "fail", f"{path}: cannot read it ({exc}{hint})")
        if problems:
            return Check("state-db", "fail", damaged.format("quick_check: " + "; ".join(problems[:2])))
        try:
            waiting = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            return Check("state-db", "fail", f"{path}: not a bin-agent database ({exc})")
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")
            writable = "writable"
        except sqlite3.OperationalError as exc:
            if (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF != 5:  # not SQLITE_BUSY: read-only, disk I/O
                return Check("state-db", "fail", f"{path}: does not take a write ({exc})")
            writable = "in use (a running agent is writing)"
    finally:
        db.close()
    return Check("state-db", "ok", f"{path}: quick_check ok, {writable}, {waiting} event(s) wait to be published")


def check_capture_folder(config: Config) -> Check:
    """The ``[capture]`` folder can be used; when it cannot, the agent sorts without capture and
    learning (``state.capture_problem``): it needs a person, as the Problem sensor says."""
    from ..learning.capture import capture_folder, folder_problem

    folder = capture_folder(config.agent.state_dir, config.capture.folder)
    problem = folder_problem(folder)
    if problem is not None:
        return Check("capture", "fail", f"{problem}: the agent sorts without capture, and [learning] cannot learn")
    return Check("capture", "ok", f"{folder} usable" if folder.is_dir() else f"{folder}: the agent creates it")


def broker_secrets(config: Config) -> tuple[str | None, Any]:
    """``(password, TLS context)`` for the broker, read as the agent reads them."""
    from ..mqtt.credentials import broker_password, broker_tls_context

    try:
        return broker_password(config), broker_tls_context(config)
    except ConfigError as exc:
        raise ValueError("; ".join(exc.problems)) from None


def check_broker(config: Config, timeout: float = BROKER_TIMEOUT_SECONDS) -> Check:
    """A real CONNECT with the configured credentials, answered by a CONNACK.

    Its own client id, so a running agent's session is not taken over; no
    Last Will and nothing published.
    """
    settings = config.mqtt
    if not settings.enabled:
        return Check("broker", "ok", "mqtt.enabled = false: nothing to check")
    import paho.mqtt.client as paho

    where = f"{settings.host}:{settings.port}"
    try:
        password, tls = broker_secrets(config)
    except ValueError as exc:  # a password or TLS file that cannot be read, named by the message
        return Check("broker", "fail", str(exc))
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2,
        client_id=f"bin-agent-doctor-{config.agent.bin_id}-{os.getpid()}",
        protocol=paho.MQTTv5,
    )  # as the agent: a broker without MQTT 5 fails here too
    if tls is not None:
        client.tls_set_context(tls)
    if settings.username:
        client.username_pw_set(settings.username, password)
    answered = threading.Event()
    reply: dict[str, Any] = {}

    def on_connect(_client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        reply["reason"] = reason_code
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(settings.host, settings.port, keepalive=settings.keepalive, clean_start=True)
    except Exception as exc:  # refused, unknown host, unreachable
        return Check("broker", "fail", f"{where}: cannot connect ({type(exc).__name__}: {exc})")
    client.loop_start()
    try:
        if not answered.wait(timeout):
            return Check("broker", "fail", f"{where}: no CONNACK within {timeout:.0f} s")
        reason = reply["reason"]
        who = f"as {settings.username!r}" if settings.username else "anonymously"
        if reason.is_failure:
            return Check("broker", "fail", f"{where}: connecting {who} refused: {reason}")
        return Check("broker", "ok", f"{where}: connected {who} (CONNACK: {reason})")
    finally:
        client.disconnect()
        client.loop_stop()
