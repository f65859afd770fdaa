#!/usr/bin/env python3
"""Copy the latest measurement tables (out/*.md) into README.md.

README.md holds each table between "<!-- NAME table... -->" and
"<!-- end of NAME table -->"; NAME is the out/NAME.md file that `make`,
`make bench` or the sweep wrote.  Tables whose file is missing are left as
they are (and named).  Usage: readme_tables.py [NAME...]
"""

import os
import re
import sys

NAMES = ["dma-churn", "vhost-churn", "tseg-sweep", "bench-dma-churn",
         "bench-vhost-churn", "bench-compare", "bench-proxy-churn", "bench-kvm-largepages",
         "bench-cost", "bench-vhost-slots"]


def main():
    names = sys.argv[1:] or NAMES
    text = open("README.md").read()
    for name in names:
        start = re.search(rf"<!-- {re.escape(name)} table[^>]*-->\n", text)
        end = text.find(f"<!-- end of {name} table -->")
        path = os.path.join("out", f"{name}.md")
        if not start or end < 0:
            continue
        if not os.path.exists(path):
            print(f"readme: no {path}: {name} table left as it is")
            continue
        table = open(path).read().strip("\n") + "\n"
        text = text[:start.end()] + table + text[end:]
        print(f"readme: {name} table from {path}")
    with open("README.md", "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
