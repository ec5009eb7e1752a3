"""Simulator throughput: interactions generated per second at about 1.3 million interactions."""
import argparse
import time

from tfrec_onerec.data.simulator import SimulatorConfig, simulate


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=25_000)
    parser.add_argument("--items", type=int, default=20_000)
    args = parser.parse_args(argv)
    config = SimulatorConfig(num_users=args.users, num_items=args.items, num_categories=50)
    start = time.perf_counter()
    data = simulate(config, progress=True)
    seconds = time.perf_counter() - start
    print(f"{data.num_interactions:,} interactions ({args.users:,} users, {args.items:,} items, "
          f"{len(data.social_edges):,} friendships) in {seconds:.1f} s: {data.num_interactions / seconds:,.0f}/s; "
          f"target 1,000,000 in 60 s = 16,667/s -> {data.num_interactions / seconds / 16_667:.0f}x the target")


if __name__ == "__main__":
    main()
