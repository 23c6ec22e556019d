"""Child process for the destructive install test (run with the repo on sys.path).

    python -m tests.firmware.install_driver BUNDLE ROOT PUBKEY KILL_AT [--wait]

Installs BUNDLE under ROOT. KILL_AT >= 0: SIGKILL itself at that progress event (a step or a
member write), i.e. exactly between two durable operations. With --wait it prints "ready" after
its imports and waits for a line on stdin, so the parent can kill it at a random moment *inside*
the install rather than during interpreter start-up. Prints "events N" when it completes.
"""
import os
import signal
import sys

from firmware.install import install


def main() -> None:
    bundle, root, pub, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    count = 0

    def progress(step, detail=None):
        nonlocal count
        if count == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        count += 1

    if "--wait" in sys.argv:
        print("ready", flush=True)
        sys.stdin.readline()
    install(bundle, root, pub, progress=progress)
    print(f"events {count}", flush=True)


if __name__ == "__main__":
    main()
