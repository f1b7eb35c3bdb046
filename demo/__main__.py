"""`python -m demo ROOT [--rows N] [--seed S]`: write the demo catalogue to a folder."""

from __future__ import annotations

import argparse
import json

from demo.catalogue import DEMO_ROWS, DEMO_SEED, build_demo_catalogue


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the demo catalogue to a folder.")
    parser.add_argument("root")
    parser.add_argument("--rows", type=int, default=DEMO_ROWS)
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    args = parser.parse_args()
    demo = build_demo_catalogue(args.root, args.rows, args.seed)
    outcomes = demo.manifest()["outcome_counts"]
    print(json.dumps({"catalogue": str(demo.catalogue_path), "outcomes": outcomes}, indent=1))


if __name__ == "__main__":
    main()
