"""Speed benchmark: the PyTorch tutorial way vs. this engine vs. pure compute, in one process, as ratios.

    python -m bench                 # probe processes vs a bare forward process, full fine-tuning vs pure compute,
                                    # the tutorial's way: on the ants/bees sample data (bench/speed.py)
    python -m bench --memory        # probe on 20,000 synthetic images in a subprocess: peak resident memory
    python -m bench --decode        # exact vs fast decoding, and where a probe run's time goes

Each mode is a module of its own, run alone with its own flags: `python -m bench.speed`, `python -m bench.memory`,
`python -m bench.decode`; this command takes the flags of all three. The other benchmarks are modules only
(bench/adapt.py, polling.py, ranking.py, ...).
"""

from __future__ import annotations

import argparse

from bench import decode, memory, speed


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    speed.add_arguments(p)
    p.add_argument("--memory", action="store_true", help="peak-memory run on synthetic images instead")
    memory.add_arguments(p)
    p.add_argument("--decode", action="store_true", help="decode paths and a probe run taken apart instead")
    args = p.parse_args()
    mode = memory if args.memory else decode if args.decode else speed
    mode.run(args)


if __name__ == "__main__":
    main()
