#!/bin/sh
# Prepares a Debian / Raspberry Pi OS machine to run the carehub hub daemon as the systemd unit next to this script
# (deploy/carehub-hub.service). docs/raspberry-pi.md says when to run it; run it as root, as often as you like:
#
#   * the service's group and system user (no login, home = the state directory), taken from the unit's
#     User= and Group=; the user becomes a member of each of the unit's SupplementaryGroups=, which must exist;
#   * the state directory from the unit's StateDirectory= (/var/lib/carehub), owner carehub:carehub, the unit's
#     StateDirectoryMode= (0750), and its keys/ directory (0700);
#   * everything under the state directory owned by carehub:carehub, and the private files in keys/ (every file
#     but the public *.pub ones) mode 0600, which repairs a hub provisioned as root (`carehub provision init`
#     run with sudo leaves hub.key owned by root, which the service cannot read);
#   * the unit as /etc/systemd/system/carehub-hub.service (0644), and systemd told to reload it;
#   * /usr/local/bin/carehub, a link to the installer's toolkit in /opt/carehub/.venv, so that
#     `sudo -u carehub carehub provision ...` works.
#
# Each step checks first and changes only what differs: a second run prints "nothing to change". Nothing is enabled
# or started (provision the hub first, then `systemctl enable --now carehub-hub`).
#
# Options:
#   --root DIR   install into DIR as if it were / (an image being prepared, or a test): users and groups go to
#                DIR/etc/passwd and DIR/etc/group (useradd --prefix), systemd is not asked to reload
#   --dry-run    print what would change and change nothing (needs no root)
#   --unit FILE  the unit file to install (default: carehub-hub.service beside this script)
#
# Exit status: 0 done (or nothing to do), 1 a step failed or a precondition is missing (nothing after it was
# changed), 2 a bad option.

set -eu
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

PROG=install-hub.sh
ROOT=
DRY_RUN=0
UNIT_SRC="$(dirname -- "$0")/carehub-hub.service"
UNIT_DIR=/etc/systemd/system
TOOLKIT=/opt/carehub/.venv/bin/carehub
TOOLKIT_LINK=/usr/local/bin/carehub
NOLOGIN=/usr/sbin/nologin
CHANGES=0

fail() {
    printf '%s: error: %s\n' "$PROG" "$1" >&2
    exit 1
}

usage_error() {
    printf '%s: error: %s (see the comment at the top of %s)\n' "$PROG" "$1" "$0" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
        --root)
            [ $# -ge 2 ] || usage_error "--root needs a directory"
            ROOT=$2
            shift 2
            ;;
        --root=*)
            ROOT=${1#--root=}
            shift
            ;;
        --unit)
            [ $# -ge 2 ] || usage_error "--unit needs a file"
            UNIT_SRC=$2
            shift 2
            ;;
        --unit=*)
            UNIT_SRC=${1#--unit=}
            shift
            ;;
        --dry-run)
            DRY_RUN=1
            shift
            ;;
        -h | --help)
            sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
            exit 0
            ;;
        *)
            usage_error "unknown option $1"
            ;;
    esac
done

if [ -n "$ROOT" ]; then
    [ -d "$ROOT" ] || fail "--root $ROOT is not a directory"
    ROOT=$(cd -- "$ROOT" && pwd -P)
    [ "$ROOT" != / ] || ROOT=
fi
[ -f "$UNIT_SRC" ] || fail "no unit file at $UNIT_SRC (pass --unit FILE)"
if [ "$DRY_RUN" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
    fail "run as root (sudo $0), or with --dry-run to see what would change"
fi

# --- what the unit says: one source of truth for the user, the groups and the state directory

unit_value() {
    # The last value of KEY= in the unit's [Service] section (systemd's rule for single-valued keys).
    sed -n '/^\[Service\]/,/^\[/s/^'"$1"'=[[:space:]]*//p' "$UNIT_SRC" | tail -n 1
}

SERVICE_USER=$(unit_value User)
SERVICE_GROUP=$(unit_value Group)
EXTRA_GROUPS=$(unit_value SupplementaryGroups)
STATE_NAME=$(unit_value StateDirectory)
STATE_MODE=$(unit_value StateDirectoryMode)
UNIT_NAME=$(basename -- "$UNIT_SRC")
[ -n "$SERVICE_USER" ] && [ -n "$SERVICE_GROUP" ] || fail "$UNIT_SRC names no User= and Group="
case $STATE_NAME in
    '' | /* | *' '* | *..*) fail "$UNIT_SRC needs one relative StateDirectory= (it names '$STATE_NAME')" ;;
esac
case $STATE_MODE in
    0[0-7][0-7][0-7]) ;;
    '') STATE_MODE=0755 ;;  # systemd's default
    *) fail "$UNIT_SRC has an unusable StateDirectoryMode= '$STATE_MODE'" ;;
esac
STATE_DIR=/var/lib/$STATE_NAME
KEYS_DIR=$STATE_DIR/keys

PASSWD=$ROOT/etc/passwd
GROUP=$ROOT/etc/group
[ -f "$PASSWD" ] && [ -f "$GROUP" ] || fail "no $PASSWD or $GROUP"

# --- helpers

say() {
    printf '%s\n' "$*"
}

# change DESCRIPTION COMMAND...: run COMMAND (or only describe it with --dry-run), counting the change.
change() {
    description=$1
    shift
    CHANGES=$((CHANGES + 1))
    if [ "$DRY_RUN" -eq 1 ]; then
        say "would $description"
    else
        say "$description"
        "$@" || fail "could not $description"
    fi
}

# field FILE NAME N: field N of the colon-separated entry NAME in FILE (empty when there is none).
field() {
    awk -F: -v name="$2" -v n="$3" '$1 == name { print $n; exit }' "$1"
}

# prefixed COMMAND ARGS...: a shadow-utils command acting on $ROOT's files.
prefixed() {
    command=$1
    shift
    if [ -n "$ROOT" ]; then
        "$command" --prefix "$ROOT" "$@"
    else
        "$command" "$@"
    fi
}

is_member() {
    # is_member GROUP USER: USER is listed in GROUP's member list.
    awk -F: -v g="$1" -v u="$2" '$1 == g { n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == u) found = 1 }
        END { exit !found }' "$GROUP"
}

mode_of() {
    stat -c '%a' -- "$1"
}

# --- preconditions, before anything changes

MISSING=
for g in $EXTRA_GROUPS; do
    [ -n "$(field "$GROUP" "$g" 1)" ] || MISSING="$MISSING $g"
done
if [ -n "$MISSING" ]; then
    fail "group(s)$MISSING named by SupplementaryGroups= in $UNIT_NAME do not exist in $GROUP: bluetooth comes with \
the bluez package (apt install bluez); gpio and audio come with Raspberry Pi OS (on plain Debian: groupadd --system \
gpio, and a udev rule giving it /dev/gpiochip*)"
fi
if [ -z "$ROOT" ] && [ "$DRY_RUN" -eq 0 ]; then
    for tool in groupadd useradd usermod; do
        command -v "$tool" >/dev/null 2>&1 || fail "$tool not found (apt install passwd)"
    done
fi

# --- group and user

if [ -z "$(field "$GROUP" "$SERVICE_GROUP" 1)" ]; then
    change "create system group $SERVICE_GROUP" prefixed groupadd --system "$SERVICE_GROUP"
fi
if [ -z "$(field "$PASSWD" "$SERVICE_USER" 1)" ]; then
    change "create system user $SERVICE_USER (group $SERVICE_GROUP, home $STATE_DIR, no login)" \
        prefixed useradd --system --gid "$SERVICE_GROUP" --home-dir "$STATE_DIR" --no-create-home \
        --shell "$NOLOGIN" --comment "carehub hub daemon" "$SERVICE_USER"
else
    have_gid=$(field "$PASSWD" "$SERVICE_USER" 4)
    want_gid=$(field "$GROUP" "$SERVICE_GROUP" 3)
    if [ -n "$want_gid" ] && [ "$have_gid" != "$want_gid" ]; then
        fail "user $SERVICE_USER exists with primary group id $have_gid, not $SERVICE_GROUP ($want_gid): \
run usermod --gid $SERVICE_GROUP $SERVICE_USER, or remove the user, then run this again"
    fi
fi
JOIN=
for g in $EXTRA_GROUPS; do
    is_member "$g" "$SERVICE_USER" || JOIN="${JOIN:+$JOIN,}$g"
done
if [ -n "$JOIN" ]; then
    change "add $SERVICE_USER to group(s) $JOIN" prefixed usermod --append --groups "$JOIN" "$SERVICE_USER"
fi

# The ids as the (possibly just created) entries say; under --root the host's names may mean other ids.
UID_=$(field "$PASSWD" "$SERVICE_USER" 3)
GID_=$(field "$GROUP" "$SERVICE_GROUP" 3)
if [ -n "$UID_" ] && [ -n "$GID_" ]; then
    OWNER=$UID_:$GID_
else  # --dry-run before the user exists
    OWNER=
fi

# --- the state directory

make_dir() {
    mkdir -m "$2" -- "$1" && chown "$OWNER" -- "$1"
}

# directory PATH MODE: PATH exists as a directory owned by the service user, with MODE.
directory() {
    path=$ROOT$1
    if [ -L "$path" ] || { [ -e "$path" ] && [ ! -d "$path" ]; }; then
        fail "$path exists and is not a directory: move it away, then run this again"
    fi
    if [ ! -d "$path" ]; then
        change "create $1 ($SERVICE_USER:$SERVICE_GROUP, mode $2)" make_dir "$path" "$2"
    elif [ "$(mode_of "$path")" != "${2#0}" ]; then
        change "set the mode of $1 to $2" chmod "$2" -- "$path"
    fi
}

if [ ! -d "$ROOT/var/lib" ]; then
    change "create /var/lib" mkdir -p -- "$ROOT/var/lib"
fi
directory "$STATE_DIR" "$STATE_MODE"
directory "$KEYS_DIR" 0700

# listed TEXT PATHS: one line per path (as seen from $ROOT) of the newline-separated PATHS.
listed() {
    printf '%s\n' "$2" | while IFS= read -r path; do say "  $1: ${path#"$ROOT"}"; done
}

# Ownership of the whole tree, then the private key files. The tree belongs to the service user, so it is walked
# with -execdir (each change made from inside the file's own directory) and chown -h: a symbolic link, or a
# directory swapped for one, is never followed out of the tree.
if [ -n "$OWNER" ] && [ -d "$ROOT$STATE_DIR" ]; then
    strays=$(find "$ROOT$STATE_DIR" \( ! -user "$UID_" -o ! -group "$GID_" \) -print)
    if [ -n "$strays" ]; then
        listed "not $SERVICE_USER's" "$strays"
        change "give these to $SERVICE_USER:$SERVICE_GROUP" \
            find "$ROOT$STATE_DIR" \( ! -user "$UID_" -o ! -group "$GID_" \) -execdir chown -h "$OWNER" {} +
    fi
elif [ -d "$ROOT$STATE_DIR" ]; then  # --dry-run before the user exists
    change "give everything under $STATE_DIR to $SERVICE_USER:$SERVICE_GROUP" true
fi
if [ -d "$ROOT$KEYS_DIR" ]; then
    loose=$(find "$ROOT$KEYS_DIR" -mindepth 1 -maxdepth 1 -type f ! -name '*.pub' ! -perm 0600 -print)
    if [ -n "$loose" ]; then
        listed "private, but not mode 0600" "$loose"
        change "set the mode of these to 0600" \
            find "$ROOT$KEYS_DIR" -mindepth 1 -maxdepth 1 -type f ! -name '*.pub' ! -perm 0600 -execdir chmod 0600 {} +
    fi
fi

# --- the unit and the toolkit link

root_only() {
    chown 0:0 -- "$1" && chmod 0644 -- "$1"
}

UNIT_DEST=$ROOT$UNIT_DIR/$UNIT_NAME
UNIT_CHANGED=0
if [ ! -d "$ROOT$UNIT_DIR" ]; then
    change "create $UNIT_DIR" mkdir -p -- "$ROOT$UNIT_DIR"
fi
if [ ! -f "$UNIT_DEST" ] || ! cmp -s -- "$UNIT_SRC" "$UNIT_DEST"; then
    change "install $UNIT_DIR/$UNIT_NAME" install -m 0644 -o 0 -g 0 -- "$UNIT_SRC" "$UNIT_DEST"
    UNIT_CHANGED=1
elif [ "$(mode_of "$UNIT_DEST")" != 644 ] || [ "$(stat -c '%u:%g' -- "$UNIT_DEST")" != 0:0 ]; then
    change "set $UNIT_DIR/$UNIT_NAME to root:root, mode 0644" root_only "$UNIT_DEST"
fi
if [ "$UNIT_CHANGED" -eq 1 ] && [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
    change "reload systemd's units" systemctl daemon-reload
fi

if [ "$(readlink -- "$ROOT$TOOLKIT_LINK" 2>/dev/null || true)" != "$TOOLKIT" ]; then
    if [ -e "$ROOT$TOOLKIT_LINK" ] && [ ! -L "$ROOT$TOOLKIT_LINK" ]; then
        fail "$TOOLKIT_LINK exists and is not a link: move it away, then run this again"
    fi
    [ -d "$ROOT${TOOLKIT_LINK%/*}" ] || change "create ${TOOLKIT_LINK%/*}" mkdir -p -- "$ROOT${TOOLKIT_LINK%/*}"
    change "link $TOOLKIT_LINK to $TOOLKIT" ln -sfn -- "$TOOLKIT" "$ROOT$TOOLKIT_LINK"
fi

if [ "$CHANGES" -eq 0 ]; then
    say "nothing to change"
elif [ "$DRY_RUN" -eq 1 ]; then
    say "dry run: nothing was changed"
fi
if [ -z "$ROOT" ] && [ ! -x "$TOOLKIT" ]; then
    say "note: $TOOLKIT is not installed yet (docs/raspberry-pi.md, 'Install carehub')"
fi
