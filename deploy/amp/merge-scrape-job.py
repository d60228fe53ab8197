#!/usr/bin/env python3
"""Merges the collector's scrape job into an existing AMP managed scraper configuration.

    merge-scrape-job.py CURRENT.yaml [scrape-job.yaml] > MERGED.yaml

Keeps CURRENT's global section and other jobs, and replaces every job that would scrape the
collector a second time or clash with it: jobs named node-exporter (a duplicate job_name is an
invalid configuration) and jobs keeping targets on port 9100 (the AWS observability accelerator's
node-exporter job keeps every endpoint on :9100, which includes the collector's headless Service).
Needs PyYAML. Tested by collector/tests/deploy.rs.
"""
import os
import sys

import yaml


def scrapes_port_9100(job):
    """Whether a relabel rule keeps targets by an address regex ending in port 9100."""
    for rule in job.get("relabel_configs") or []:
        if (
            rule.get("action") == "keep"
            and "__address__" in (rule.get("source_labels") or [])
            and str(rule.get("regex", "")).rstrip("$'\"").endswith(":9100")
        ):
            return True
    return False


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    job_file = sys.argv[2] if len(sys.argv) == 3 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "scrape-job.yaml"
    )
    with open(sys.argv[1]) as f:
        config = yaml.safe_load(f) or {}
    with open(job_file) as f:
        jobs = yaml.safe_load(f)
    names = {job["job_name"] for job in jobs}
    kept, removed = [], []
    for job in config.get("scrape_configs") or []:
        if job.get("job_name") in names or scrapes_port_9100(job):
            removed.append(job.get("job_name"))
        else:
            kept.append(job)
    config["scrape_configs"] = kept + jobs
    for name in removed:
        print(f"replaced job {name}", file=sys.stderr)
    if "cluster" not in ((config.get("global") or {}).get("external_labels") or {}):
        print("warning: no external label cluster; the dashboards select by it", file=sys.stderr)
    yaml.safe_dump(config, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
