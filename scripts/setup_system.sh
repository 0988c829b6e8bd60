#!/usr/bin/env bash
# System set-up for retrspect: PostgreSQL 15 running, DaCHS 2.7 from Debian,
# pgvector built from Debian's source, STILTS, /etc/gavo.rc.
# Idempotent; runs as root; no systemd.  Each step checks before it acts.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PORT="${RETRSPECT_PORT:-8080}"
log() { printf '[setup] %s\n' "$*"; }


# PostgreSQL 15.20 (bookworm-security, pulled in by postgresql-server-dev-15)
# rejects pg_sphere 1.2.0's two DaCHS-compatibility "@" operators on smoc
# ("commutator operator @> is already the commutator of operator <@"), so
# CREATE EXTENSION pg_sphere, and with it DaCHS's postinst, fails.  Upstream
# dropped those operators (postgrespro/pgsphere#92); we drop their
# COMMUTATOR/NEGATOR clauses, which keeps the operators and is idempotent.
patch_pgsphere() {
  local f=/usr/share/postgresql/15/extension/pg_sphere--1.2.0.sql
  [ -f "$f" ] || return 0
  perl -0pi -e 's{(-- a minimal set of backwards-compatible operators for GAVO DaCHS.*?)(?=-- debugging)}{ (my $b=$1) =~ s/^\s*(COMMUTATOR|NEGATOR)\s*=.*\n//mg; $b }se' "$f"
}

pg_up() { pg_lsclusters -h 2>/dev/null | awk '$1=="15" && $2=="main"{print $4}' | grep -q online; }
pg_start() {
  if ! pg_up; then
    log "starting PostgreSQL 15"
    pg_ctlcluster --skip-systemctl-redirect 15 main start
  fi
}
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# Finish an install that an earlier run left half-configured.
if [ -n "$(dpkg --audit 2>/dev/null)" ]; then
  pg_start; patch_pgsphere
  log "finishing interrupted package configuration"
  dpkg --configure -a
fi

need_pkgs=()
for p in postgresql-15 postgresql-server-dev-15 dpkg-dev gavodachs2-server stilts chromium chromium-driver haproxy supervisor; do
  installed "$p" || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  apt-get update -qq
  # server-dev may upgrade postgresql-15 itself: install it first, then
  # (re)start the cluster, because DaCHS's postinst needs a running server.
  apt-get install -y -qq postgresql-15 postgresql-server-dev-15 dpkg-dev >/dev/null
  pg_ctlcluster --skip-systemctl-redirect 15 main restart 2>/dev/null || pg_start
  apt-get install -y -qq postgresql-15-pgsphere postgresql-15-q3c >/dev/null
  patch_pgsphere
  apt-get install -y -qq gavodachs2-server >/dev/null
  apt-get install -y -qq --no-install-recommends stilts >/dev/null
  # headless browser for the web page tests
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
  # several DaCHS processes behind a balancer, kept up by supervisord
  # (retrspect runs its own supervisord and HAProxy; the packages' own
  # services are not used)
  apt-get install -y -qq --no-install-recommends haproxy supervisor >/dev/null
fi
pg_start

# pgvector, from Debian trixie's *source* package, built against bookworm's PG 15
if [ ! -f "$(/usr/lib/postgresql/15/bin/pg_config --sharedir)/extension/vector.control" ]; then
  log "building pgvector from Debian source"
  echo 'deb-src http://deb.debian.org/debian trixie main' > /etc/apt/sources.list.d/retrspect-trixie-src.list
  apt-get update -qq
  build=$(mktemp -d)
  (cd "$build" && apt-get source -qq pgvector >/dev/null 2>&1 && cd pgvector-*/ \
    && make -s PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config >/dev/null \
    && make -s PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config install >/dev/null)
  rm -rf "$build"
  pg_ctlcluster --skip-systemctl-redirect 15 main restart
fi
runuser -u postgres -- psql -q -d gavo -c 'SET client_min_messages=warning; CREATE EXTENSION IF NOT EXISTS vector'
# kNN through HNSW: iterative scans let a filtered or large TOP k return k
# rows (in exact distance order with strict_order); a generous ef_search
# keeps recall high; index builds get memory enough to keep the graph.
runuser -u postgres -- psql -q -d gavo <<'SQL'
ALTER DATABASE gavo SET hnsw.iterative_scan = 'strict_order';
ALTER DATABASE gavo SET hnsw.ef_search = 100;
ALTER DATABASE gavo SET hnsw.max_scan_tuples = 200000;
-- an async TAP worker that is killed (job aborted or over its time) leaves
-- its query running unless the backend notices the closed connection
ALTER DATABASE gavo SET client_connection_check_interval = '1s';
ALTER ROLE gavoadmin SET maintenance_work_mem = '2GB';
ALTER ROLE dachsroot SET maintenance_work_mem = '2GB';
SQL

# A streaming read replica: PostgreSQL 15 cluster "replica" on port 5433,
# built once with pg_basebackup from the primary over a replication slot.
# TAP queries of DaCHS's untrusted profile run there (profiles below).
REPLICA_PORT="${RETRSPECT_REPLICA_PORT:-5433}"
replica_exists() { pg_lsclusters -h 2>/dev/null | awk '$1=="15" && $2=="replica"' | grep -q .; }
replica_up() { pg_lsclusters -h 2>/dev/null | awk '$1=="15" && $2=="replica"{print $4}' | grep -q online; }
if ! replica_exists; then
  log "building the read replica (15/replica, port $REPLICA_PORT) with pg_basebackup"
  pg_createcluster 15 replica --port "$REPLICA_PORT" >/dev/null
  rm -rf /var/lib/postgresql/15/replica
  runuser -u postgres -- psql -q -c "SELECT pg_create_physical_replication_slot('retrspect_replica') WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = 'retrspect_replica')" >/dev/null
  runuser -u postgres -- pg_basebackup -D /var/lib/postgresql/15/replica -R -X stream \
    -S retrspect_replica -d "host=/var/run/postgresql port=5432"
  # queries on the standby are not cancelled by the primary's vacuum, and
  # wait rather than fail when an import's replay conflicts with them
  cat > /etc/postgresql/15/replica/conf.d/retrspect-standby.conf <<CONF
hot_standby = on
hot_standby_feedback = on
max_standby_streaming_delay = 300s
CONF
fi
replica_up || pg_ctlcluster --skip-systemctl-redirect 15 replica start
etc=/var/gavo/etc
if [ ! -f $etc/untrustedprimary ]; then
  # the untrusted profile as DaCHS made it, on the primary: TAP uploads
  # need writable temporary tables (vo_services/dachs_hook.py routes them)
  runuser -u dachsroot -- cp -p $etc/untrustedquery $etc/untrustedprimary
fi
runuser -u dachsroot -- sh -c "printf 'database = gavo\nhost = localhost\nport = $REPLICA_PORT\n' > $etc/dsn-replica"
runuser -u dachsroot -- sh -c "sed 's/^include dsn\$/include dsn-replica/' $etc/untrustedprimary > $etc/untrustedquery.new && mv $etc/untrustedquery.new $etc/untrustedquery"

# DaCHS configuration: loopback server, our authority.
RC_VERSION=2  # bump when the gavo.rc written below changes
if [ ! -f /etc/gavo.rc ] || ! grep -q "serverPort: $PORT\$" /etc/gavo.rc \
    || ! grep -q "^# retrspect gavo.rc v$RC_VERSION " /etc/gavo.rc; then
  log "writing /etc/gavo.rc (port $PORT)"
  cat > /etc/gavo.rc <<RC
# retrspect gavo.rc v$RC_VERSION (written by scripts/setup_system.sh)
[general]
rootDir: /var/gavo

[web]
bindAddress: 127.0.0.1
serverPort: $PORT
serverURL: http://localhost:$PORT
sitename: retrspect spectra
enableTests: True

[ivoa]
authority: retrspect.example

[async]
maxTAPRunning: 4
# documented row limits: MAXREC defaults to 10000, nobody gets more than 1M
# rows (TOP k for kNN included); hitting MAXREC is flagged as OVERFLOW
defaultMAXREC: 10000
hardMAXREC: 1000000
RC
fi
# DaCHS fetches the UAT vocabulary from ivoa.net; offline, a stub cache stops the error.
uat=/var/gavo/cache/http:=2F=2Fwww.ivoa.net=2Frdf=2Fuat
if [ ! -f "$uat" ]; then
  runuser -u dachsroot -- mkdir -p /var/gavo/cache
  runuser -u dachsroot -- sh -c "printf '{\"terms\": {}}' > '$uat'"
fi
# Site metadata DaCHS puts into every registry record and VOTable.
if grep -q "Fill Out" /var/gavo/etc/defaultmeta.txt 2>/dev/null; then
  log "writing /var/gavo/etc/defaultmeta.txt"
  runuser -u dachsroot -- tee /var/gavo/etc/defaultmeta.txt >/dev/null <<META
publisher: retrspect spectral archive
contact.name: retrspect operators
contact.address: localhost
contact.email: retrspect@localhost.invalid
creator.name: retrspect operators
creator.logo: \\getConfig{web}{serverURL}/favicon.png

_noresultwarning: Your query did not match any data.

authority.creationDate: $(date -u +%Y-%m-%dT%H:%M:%S)
authority.shortName: retrspect
authority.title: retrspect spectral archive
site.description: A retrieval engine for spectra published through \\
the Virtual Observatory: SSAP, ObsCore, Datalink/SODA and TAP with \\
similarity search on learned latent vectors.
META
fi
# ObsCore's own tables must exist before any RD publishes into ivoa.obscore.
if [ -z "$(runuser -u postgres -- psql -tA -d gavo -c "select to_regclass('ivoa._obscoresources')")" ]; then
  log "creating the ObsCore table"
  runuser -u dachsroot -- dachs imp //obscore
fi
log "system ready: PostgreSQL $(runuser -u postgres -- psql -tAc 'show server_version' | cut -d' ' -f1), DaCHS $(dpkg-query -W -f='${Version}' gavodachs2-server), pgvector $(runuser -u postgres -- psql -tA -d gavo -c "select extversion from pg_extension where extname='vector'")"
