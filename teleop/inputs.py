"""Small pluggable input sources for start / stop / pause: keyboard, foot pedal, queue.

An input source is anything with ``poll() -> list[str]`` (actions since the last poll,
never blocking) and ``close()``. Actions are TeleopCore actions: start, stop, pause, toggle.

Sources are built from one-line specs (a config / ROS parameter list):

    keyboard                              keys on this process's terminal (default key map:
                                          space toggle, s start, x stop, p pause; works under
                                          `duet up` / `ros2 run`, which keep the terminal)
    keyboard:p=toggle,s=start,x=stop      custom key map
    evdev:/dev/input/by-id/usb-PCsensor_FootSwitch-event-kbd            (any key -> toggle)
    evdev:/dev/input/by-id/usb-PCsensor_FootSwitch-event-kbd:30=toggle,48=stop   (key codes)

Most USB foot pedals enumerate as keyboards: read them either through the terminal (they
type a key) or, without a focused terminal, from their evdev device node (the process
needs read access to it, e.g. membership of the `input` group).
"""

from __future__ import annotations

import os
import queue
import struct
import sys
from typing import Protocol

from duet.errors import ConfigError
from duet.teleop.core import ACTIONS

DEFAULT_KEYS = {" ": "toggle", "s": "start", "x": "stop", "p": "pause"}


class InputSource(Protocol):
    name: str

    def poll(self) -> list[str]:
        """Actions received since the last poll (never blocks)."""
        ...

    def close(self) -> None: ...


def _check_action(action: str, spec: str) -> str:
    if action not in ACTIONS:
        raise ConfigError(f"input {spec!r}: unknown action {action!r} (use {', '.join(ACTIONS)})")
    return action


class QueueSource:
    """Actions pushed from another thread (a GUI, a test, a service bridge)."""

    def __init__(self, name: str = "queue"):
        self.name = name
        self._q: queue.SimpleQueue[str] = queue.SimpleQueue()

    def push(self, action: str) -> None:
        self._q.put(_check_action(action, self.name))

    def poll(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self._q.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        pass


class KeyboardSource:
    """Single key presses on a terminal (cbreak mode, restored on close)."""

    def __init__(self, keymap: dict[str, str] | None = None, fd: int | None = None):
        self.name = "keyboard"
        self.keymap = dict(keymap or DEFAULT_KEYS)
        self.fd = sys.stdin.fileno() if fd is None else fd
        self._saved = None
        if os.isatty(self.fd):
            import termios
            import tty

            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        self._was_blocking = os.get_blocking(self.fd)
        os.set_blocking(self.fd, False)

    def poll(self) -> list[str]:
        try:
            data = os.read(self.fd, 64)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            return []
        text = data.decode("utf-8", "ignore")
        return [self.keymap[c] for c in text if c in self.keymap]

    def close(self) -> None:
        try:
            os.set_blocking(self.fd, self._was_blocking)
        except OSError:
            pass
        if self._saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None


# struct input_event on 64-bit Linux: struct timeval (2 x long), __u16 type, __u16 code, __s32 value
_EVENT = struct.Struct("llHHi")
_EV_KEY = 1


class EvdevSource:
    """Key presses from a Linux input device node (a foot pedal), read without extra packages.

    ``keymap`` maps key codes (linux/input-event-codes.h, e.g. 30 = KEY_A) to actions;
    None maps every key to ``default_action``. Only presses (value 1) count.
    """

    def __init__(self, path: str, keymap: dict[int, str] | None = None, default_action: str = "toggle"):
        self.name = f"evdev:{path}"
        self.path = path
        self.keymap = keymap
        self.default_action = default_action
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            raise ConfigError(
                f"input device {path}: cannot open ({e.strerror}); check the path (ls /dev/input/by-id) "
                "and read permission (add the user to the 'input' group)"
            ) from None
        self._buf = b""

    def poll(self) -> list[str]:
        out: list[str] = []
        while True:
            try:
                data = os.read(self.fd, _EVENT.size * 32)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if not data:
                break
            self._buf += data
        n = len(self._buf) // _EVENT.size
        for i in range(n):
            _, _, etype, code, value = _EVENT.unpack_from(self._buf, i * _EVENT.size)
            if etype != _EV_KEY or value != 1:
                continue
            if self.keymap is None:
                out.append(self.default_action)
            elif code in self.keymap:
                out.append(self.keymap[code])
        self._buf = self._buf[n * _EVENT.size :]
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _parse_map(text: str, spec: str, key_type: type) -> dict:
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        if "=" not in item:
            raise ConfigError(f"input {spec!r}: expected key=action in {item!r}, e.g. 30=toggle")
        k, action = item.rsplit("=", 1)
        try:
            key = key_type(k) if key_type is int else k
        except ValueError:
            raise ConfigError(f"input {spec!r}: key code {k!r} is not an integer") from None
        if key_type is str and isinstance(key, str) and len(key) != 1:
            raise ConfigError(f"input {spec!r}: keyboard keys are single characters, got {k!r}")
        out[key] = _check_action(action.strip(), spec)
    return out


def make_input(spec: str) -> InputSource:
    """Build an input source from its one-line spec (see the module docstring)."""
    kind, _, rest = spec.partition(":")
    if kind == "keyboard":
        keymap = _parse_map(rest, spec, str) if rest else None
        return KeyboardSource(keymap)
    if kind == "evdev":
        if not rest:
            raise ConfigError(
                f"input {spec!r}: give the device, e.g. evdev:/dev/input/by-id/<pedal>-event-kbd"
            )
        path, sep, mapping = rest.partition(":")
        return EvdevSource(path, _parse_map(mapping, spec, int) if sep and mapping else None)
    raise ConfigError(f"input {spec!r}: unknown kind {kind!r} (use keyboard or evdev:/dev/input/...)")
