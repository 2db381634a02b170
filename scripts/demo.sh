#!/usr/bin/env bash
# The demo (`make demo`): start the 'demo' site, synthesize 5 CT studies, push them over DICOM,
# and say where to look; then (unless RADFLOW_DEMO_FEDERATED=0, `make demo-site`) a hub and a
# second site, and a cross-site study (scripts/demo-federation.sh). Re-running it is safe: a running site is left as it is, and pushing the
# same studies again stores nothing twice.
set -euo pipefail
cd "$(dirname "$0")/.."
radflow=${RADFLOW_VENV:-$PWD/.venv}/bin/radflow
site=${RADFLOW_DEMO_SITE:-demo}
home=${RADFLOW_HOME:-$HOME/.radflow}
data=$home/demo-data

"$radflow" site up --site "$site"
if [ ! -f "$data/manifest.json" ]; then
    "$radflow" data synth --cases 5 --seed 42 --out "$data"
fi
"$radflow" data push "$data" --site "$site"
"$radflow" catalog wait --site "$site"
echo
"$radflow" catalog stats --site "$site"
"$radflow" cohort create contrast-ct --site "$site" --replace \
    --description "contrast-enhanced CT" -f modality=CT -f contrast=true
"$radflow" cohort create abdomen-ct --site "$site" --replace \
    --description "all abdominal CT" -f modality=CT -f body_part=ABDOMEN
echo
echo "segment-and-quantify on the 5 studies (nnU-Net -> DICOM SEG, pyradiomics -> DICOM SR):"
"$radflow" pipeline run --site "$site" --cohort abdomen-ct
echo
echo "one case goes to review: its run suspends (no process held) until someone decides:"
first=$("$radflow" cohort series contrast-ct --site "$site" --json | python3 -c \
    "import json,sys; print(json.load(sys.stdin)[0]['series_uid'])")
"$radflow" pipeline run --site "$site" --series "$first" --review
"$radflow" review list --site "$site"

status=$("$radflow" site status --site "$site" --json) || true  # once: the URLs below
url() { python3 -c "import json,sys; c={x['name']: x for x in json.load(sys.stdin)['components']}; \
print(c['$1']['urls']['$2'])" <<< "$status"; }
cat <<MSG

The demo site '$site' is running. Where to look:
  Orthanc Explorer  $(url orthanc explorer)
                    5 synthetic abdominal CT studies; DICOMweb at $(url orthanc dicomweb)
  Prefect UI        $(url prefect-server ui)
                    work pool '$site-process' with one process worker; blocks '$site', '$site-orthanc'
  Log-ins           radflow site credentials --site $site   (authentication is on everywhere)
  Sample data       $data (DICOM + ground-truth labels)
  Catalog           radflow catalog stats --site $site; radflow cohort list --site $site
  Results           a SEG and an SR per study in Orthanc; in the Prefect UI, the
                    segment-and-quantify run with its table and SEG overlay artifacts;
                    radflow pipeline features --site $site --out features.csv

  Worklist          $(url worklist worklist)
                    one case waits for review: log in as radiologist, open it, accept,
                    correct it in the editor, or reject it (docs/clinician-guide.md)
$("$radflow" site credentials --site "$site" | grep '^Worklist' | sed 's/^Worklist [^ ]* */                    /')
  Explore           $(url worklist explore)
                    the catalog as clickable facets, the cohort builder, series with their
                    SEG overlays and features: log in as researcher (metadata) or radiologist
                    (images too) (docs/explore.md)
  Review (CLI)      radflow review list --site $site; radflow review decide ID accept
                    (or resume the suspended run from the Prefect UI's own form)
  Audit log         radflow site audit verify --site $site

  radflow site status --site $site     health and URLs
  make demo-down                       stop everything (the sites and the hub)
MSG

if [ "${RADFLOW_DEMO_FEDERATED:-1}" != 0 ]; then
    scripts/demo-federation.sh
fi
