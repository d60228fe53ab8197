#!/usr/bin/env python3
"""Uploads the dashboards of deploy/grafana to Amazon Managed Grafana through Grafana's HTTP API.

    GRAFANA_TOKEN=<service account token> provision.py --grafana-url URL --prometheus-url URL
        [--region REGION] [--datasource-uid UID] [--folder-uid UID] [DASHBOARD.json ...]

A managed workspace has no file provisioning, so this does what it would, and may run again:
  1. the AMP data source (uid "amp"): Prometheus at --prometheus-url (the stack's output
     PrometheusUrl) signed with SigV4 by the workspace's IAM role; created, or updated in place;
  2. the folder "ebpf-node-collector";
  3. each dashboard (every *.json beside this script by default), its `datasource` variable set
     to that data source, replacing the dashboard of the same uid.
The dashboards must name their data source through that variable only; another reference stops
the upload. The token comes from the environment (GRAFANA_TOKEN), not the command line; it needs
the Admin role (data sources). See docs/deploying.md, "The AWS side as code". Python 3 standard
library only; tested by collector/tests/deploy.rs against a fake Grafana.
"""
import argparse
import glob
import ipaddress
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
DATASOURCE_NAME = "Amazon Managed Service for Prometheus"
FOLDER_TITLE = "ebpf-node-collector"
VARIABLE = "${datasource}"


class Grafana:
    def __init__(self, url, token):
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method, path, body=None, missing_ok=False):
        """The JSON answer of METHOD PATH, or None for 404 when MISSING_OK."""
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/json",
                **({} if body is None else {"Content-Type": "application/json"}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            if error.code == 404 and missing_ok:
                return None
            detail = error.read().decode(errors="replace")
            sys.exit(f"{method} {path}: HTTP {error.code}: {detail}")
        except urllib.error.URLError as error:
            sys.exit(f"{method} {self.url}{path}: {error.reason}")


def check_url(url):
    """HTTPS, or HTTP to a loopback address only (a test): the token must not cross a network."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "https":
        return
    if parsed.scheme == "http":
        host = parsed.hostname or ""
        try:
            if host == "localhost" or ipaddress.ip_address(host).is_loopback:
                return
        except ValueError:
            pass
    sys.exit(f"--grafana-url {url}: use https:// (http:// only to a loopback address)")


def region_of(prometheus_url):
    found = re.search(r"aps-workspaces\.([a-z0-9-]+)\.amazonaws\.com", prometheus_url)
    return found.group(1) if found else None


def datasource_references(value):
    """Every `datasource` object or name in a dashboard."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "datasource":
                yield item
            yield from datasource_references(item)
    elif isinstance(value, list):
        for item in value:
            yield from datasource_references(item)


def wired(path, datasource_uid):
    """The dashboard of PATH with its data source variable set to DATASOURCE_UID."""
    with open(path, encoding="utf-8") as f:
        dashboard = json.load(f)
    for reference in datasource_references(dashboard):
        uid = reference.get("uid") if isinstance(reference, dict) else reference
        if uid not in (VARIABLE, "-- Grafana --", "grafana"):
            sys.exit(f"{path}: a data source reference other than {VARIABLE}: {reference}")
    variables = [
        variable
        for variable in dashboard.get("templating", {}).get("list", [])
        if variable.get("type") == "datasource" and variable.get("name") == "datasource"
    ]
    if len(variables) != 1 or variables[0].get("query") != "prometheus":
        sys.exit(f"{path}: no Prometheus data source variable named datasource")
    variables[0]["current"] = {"selected": True, "text": DATASOURCE_NAME, "value": datasource_uid}
    dashboard.pop("id", None)
    return dashboard


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grafana-url", required=True, help="the stack's output GrafanaUrl")
    parser.add_argument("--prometheus-url", required=True, help="the stack's output PrometheusUrl")
    parser.add_argument("--region", help="the workspace's Region (default: from --prometheus-url)")
    parser.add_argument("--datasource-uid", default="amp")
    parser.add_argument("--folder-uid", default="ebpf-node-collector")
    parser.add_argument("dashboards", nargs="*")
    args = parser.parse_args()
    check_url(args.grafana_url)
    token = os.environ.get("GRAFANA_TOKEN")
    if not token:
        sys.exit("GRAFANA_TOKEN is not set (aws grafana create-workspace-service-account-token)")
    region = args.region or region_of(args.prometheus_url)
    if not region:
        sys.exit(f"--region: none in --prometheus-url {args.prometheus_url}")
    dashboards = args.dashboards or sorted(glob.glob(os.path.join(HERE, "*.json")))
    # Every dashboard is checked before anything changes.
    wired_dashboards = [(path, wired(path, args.datasource_uid)) for path in dashboards]

    grafana = Grafana(args.grafana_url, token)
    uid = args.datasource_uid
    datasource = {
        "uid": uid,
        "name": DATASOURCE_NAME,
        "type": "prometheus",
        "access": "proxy",
        "url": args.prometheus_url,
        "jsonData": {
            "httpMethod": "POST",
            "sigV4Auth": True,
            "sigV4AuthType": "ec2_iam_role",  # the workspace's IAM role
            "sigV4Region": region,
        },
    }
    if grafana.call("GET", f"/api/datasources/uid/{uid}", missing_ok=True) is None:
        grafana.call("POST", "/api/datasources", datasource)
        print(f"data source {uid}: created")
    else:
        grafana.call("PUT", f"/api/datasources/uid/{uid}", datasource)
        print(f"data source {uid}: updated")

    folder = args.folder_uid
    if grafana.call("GET", f"/api/folders/{folder}", missing_ok=True) is None:
        grafana.call("POST", "/api/folders", {"uid": folder, "title": FOLDER_TITLE})
        print(f"folder {folder}: created")

    for path, dashboard in wired_dashboards:
        answer = grafana.call(
            "POST",
            "/api/dashboards/db",
            {
                "dashboard": dashboard,
                "folderUid": folder,
                "overwrite": True,
                "message": "deploy/grafana/provision.py",
            },
        )
        print(f"dashboard {os.path.basename(path)}: {args.grafana_url.rstrip('/')}{answer.get('url', '')}")


if __name__ == "__main__":
    main()
