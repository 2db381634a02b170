#!/usr/bin/env bash
# The federated part of the demo (`make demo` runs it after the single-site part): a hub and a
# second site 'demo-b' with its own synthetic patients (another seed: another vendor mix), both
# sites joined, the cross-site count published, approved at both sites (automatically, in the
# demo only), and run as a study. Re-running it is safe.
set -euo pipefail
cd "$(dirname "$0")/.."
radflow=${RADFLOW_VENV:-$PWD/.venv}/bin/radflow
home=${RADFLOW_HOME:-$HOME/.radflow}
site_a=${RADFLOW_DEMO_SITE:-demo}
site_b=${RADFLOW_DEMO_SITE_B:-demo-b}
data_b=$home/demo-data-b

echo
echo "federation: a hub (its Prefect server and worker, and the federation API) ..."
"$radflow" hub up
hub_url=$("$radflow" hub credentials --json | python3 -c "import json,sys; print(json.load(sys.stdin)['url'])")

echo
echo "... and a second site, $site_b, with its own patients:"
"$radflow" site up --site "$site_b"
if [ ! -f "$data_b/manifest.json" ]; then
    "$radflow" data synth --cases 5 --seed 4242 --out "$data_b"
fi
"$radflow" data push "$data_b" --site "$site_b"
"$radflow" catalog wait --site "$site_b"
"$radflow" cohort create abdomen-ct --site "$site_b" --replace \
    --description "all abdominal CT" -f modality=CT -f body_part=ABDOMEN
"$radflow" pipeline run --site "$site_b" --cohort abdomen-ct

# `site join` starts the agent of a running site (a site that joined in an earlier run of the
# demo started its agent with its `site up` above)
for site in "$site_a" "$site_b"; do
    if [ ! -f "$home/sites/$site/federation/hub.json" ]; then
        code=$("$radflow" hub site add "$site" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['code'])")
        "$radflow" site join "$hub_url" --code "$code" --site "$site"
    fi
done

echo
echo "the cross-site count and feature statistics, published (signed by the hub) and approved at"
echo "both sites:"
hash=$("$radflow" publish federation/flows/federated-cohort-count --json | python3 -c "import json,sys; print(json.load(sys.stdin)['hash'])")
stats=$("$radflow" publish federation/flows/federated-feature-statistics --json | python3 -c "import json,sys; print(json.load(sys.stdin)['hash'])")
for site in "$site_a" "$site_b"; do
    "$radflow" site approve "$hash" --site "$site"
    "$radflow" site approve "$stats" --site "$site"
    # the demo's choices, in one change: jobs run without a steward accepting each one, and
    # as its sites hold 5 quantified studies each, the minimum cohort (default 10) is 5 and
    # the small-cell limit (default 5) is 2; it says so below
    "$radflow" site policy set job_mode=auto min_cohort=5 min_cell=2 --site "$site" > /dev/null
done
echo "  (demo policy at both sites: job_mode=auto, min_cohort=5, min_cell=2; the defaults are"
echo "   manual, 10 and 5)"
"$radflow" cohort show abdomen-ct --site "$site_a" --json | python3 -c \
    "import json,sys; print(json.dumps(json.load(sys.stdin)['definition']))" > "$home/abdomen-ct.json"
echo
"$radflow" study run federated-cohort-count --cohort "$home/abdomen-ct.json" --deadline 180

echo
echo "federated feature statistics over both sites' radiomics (exact moments, bounded quantiles):"
"$radflow" study run federated-feature-statistics --cohort "$home/abdomen-ct.json" \
    --param features=original_firstorder_Mean,original_shape_VoxelVolume \
    --param segments=liver,spleen,kidney --param bins=32 --deadline 180

hub=$("$radflow" hub credentials --json)  # once: the hub's URLs and log-ins below are in it
web() { python3 -c "import json,sys; print(json.load(sys.stdin)['web']['url'])" <<< "$hub"; }
creds() { python3 -c "import json,sys; p=json.load(sys.stdin)['prefect']; print(p['$1'])" <<< "$hub"; }
worklist() { "$radflow" worklist url --site "$1" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['url'])"; }
cat <<MSG

The hub and two sites are running. Where to look:
  Hub Prefect UI    $(creds url)   (user $(creds username); password: radflow hub credentials)
                    the study as a run of federated-study/federated-cohort-count, with its
                    per-site log lines and its table; artifacts under $home/hub/studies/
  Hub web app       $(web)   (coordinator log-ins: radflow hub credentials)
                    the studies, their results, charts and reports; the sites; the flows
  Federation API    $hub_url   (the sites' agents call it; the hub never calls a site)
  Site $site_a      worklist $(worklist "$site_a")   radflow site status --site $site_a
  Site $site_b    worklist $(worklist "$site_b")   radflow site status --site $site_b
  At each site      radflow site versions | policy show | audit verify --site NAME
  Another study     radflow study run federated-cohort-count --cohort $home/abdomen-ct.json
  Stop everything   make demo-down
MSG
