#!/usr/bin/env bash
# Backing services for the Session Ledger test suite, without Docker:
#
#   Apache Kafka  (one KRaft node, broker + controller)  PLAINTEXT 127.0.0.1:9092
#                                                         controller 127.0.0.1:9093
#   Apache Cassandra 5.0 (one node; ScyllaDB in prod)     CQL        127.0.0.1:9042
#                                                         (internode 127.0.0.1:7000,
#                                                          JMX       127.0.0.1:7199)
#   (default ports; see the knobs below)
#
# Usage: scripts/services.sh up [--fresh] [--regions 2] | down | status [--regions 2]
#        | stop-kafka | stop-cassandra | pause-kafka | resume-kafka
#        | stop-mirror | start-mirror | pause-mirror | resume-mirror | down-regions
#
#   up       fetch the jars once (Maven Central, via `mvn dependency:copy-dependencies`
#            and the poms in scripts/services/), write the configs, start whatever
#            is not running yet, and wait until both accept clients.
#            Already up: does nothing and says so.
#   --fresh  (or LEDGER_SERVICES_FRESH=1) stop the services if they run and wipe
#            their data directories before starting.
#   down     SIGTERM, then SIGKILL after LEDGER_SERVICES_STOP_TIMEOUT seconds.
#   status   one line per service: up / down; exit 0 only when both are up.
#   stop-kafka  stop only the broker (outage tests); `up` starts it again.
#   stop-cassandra  stop only Cassandra (outage tests); `up` starts it again.
#   pause-kafka / resume-kafka  SIGSTOP / SIGCONT the broker: a hung broker whose
#            connections stay open (outage tests).
#   --regions 2 also a second region: the default Kafka is region "east", a second
#            one-node KRaft cluster is region "west" (127.0.0.1:9192, controller
#            9193, state under $LEDGER_SERVICES_HOME/west), and MirrorMaker 2
#            (org.apache.kafka.connect.mirror.MirrorMaker, active-active,
#            DefaultReplicationPolicy: east's `session-events` arrives in west as
#            `east.session-events` and back the other way; config in
#            scripts/services/mm2.properties). Starts only what is missing: a
#            running east Kafka or Cassandra is used as it is, never restarted.
#   stop-mirror / start-mirror  cut / restore the link between the regions
#            (stop / start MirrorMaker 2 only; it resumes where it stopped).
#   pause-mirror / resume-mirror  SIGSTOP / SIGCONT MirrorMaker 2: a link cut like a
#            network partition, without a JVM start-up when it comes back.
#   down-regions  stop MirrorMaker 2 and the west broker only (east keeps running).
#   status --regions 2  also reports west and MirrorMaker; exit 0 only when all are up.
#
# Needs: Java 17+ (`java` on PATH or $JAVA_HOME), Maven 3 (`mvn`), bash 4+,
# coreutils and setsid (util-linux). No Docker, no cqlsh, no other downloads.
# Everything it downloads or writes lives in $LEDGER_SERVICES_HOME (default
# ~/.cache/session-ledger/services), never in the work tree:
#   m2/                 Maven local repository used for the fetch (-Dmaven.repo.local)
#   kafka/{lib,config,data,logs}, kafka/kafka.pid
#   cassandra/{lib,conf,data,logs}, cassandra/cassandra.pid
#   west/kafka/...      the second region's broker (--regions 2)
#   mirror/{lib,mm2.properties,logs}, mirror/mirror.pid   MirrorMaker 2
#
# Environment knobs (all optional):
#   LEDGER_SERVICES_HOME            cache / state directory (see above)
#   LEDGER_KAFKA_VERSION            default 4.1.1  (org.apache.kafka:kafka_2.13)
#   LEDGER_CASSANDRA_VERSION        default 5.0.9  (org.apache.cassandra:cassandra-all)
#   LEDGER_KAFKA_HEAP               default 512m   (-Xmx)
#   LEDGER_CASSANDRA_HEAP           default 1G     (-Xms = -Xmx)
#   LEDGER_KAFKA_AUTO_CREATE_TOPICS default false  (auto.create.topics.enable)
#   LEDGER_KAFKA_JVM_OPTS           extra JVM options for the broker (word-split)
#   LEDGER_CASSANDRA_JVM_OPTS       extra JVM options for Cassandra (word-split)
#   LEDGER_SERVICES_FRESH           1 = same as --fresh
#   LEDGER_SERVICES_CDS             default 1: record/use a class-data-sharing
#                                   archive per service (faster JVM start-up)
#   LEDGER_SERVICES_START_TIMEOUT   seconds to wait for each service, default 240
#   LEDGER_SERVICES_STOP_TIMEOUT    seconds between SIGTERM and SIGKILL, default 45
#   LEDGER_KAFKA_PORT               default 9092 (the controller listens on port + 1)
#   LEDGER_CQL_PORT                 default 9042
#   LEDGER_CASSANDRA_STORAGE_PORT   default 7000 (internode)
#   LEDGER_CASSANDRA_JMX_PORT       default 7199
#   LEDGER_WEST_KAFKA_PORT          default 9192: the west broker (--regions 2)
#   LEDGER_MIRROR_TOPICS            topics MirrorMaker 2 replicates (regular
#                                   expressions, comma-separated), default
#                                   `session-events,regional-.*` (the default
#                                   topic and the region tests' topics)
#   LEDGER_MIRROR_REFRESH_SECONDS   how often MirrorMaker looks for new topics,
#                                   default 2
#   LEDGER_MIRROR_HEAP              default 384m
#   LEDGER_SERVICES_JARS            where the fetched jars and the Maven repository
#                                   live, default $LEDGER_SERVICES_HOME
#   With another LEDGER_SERVICES_HOME and other ports (and LEDGER_SERVICES_JARS
#   pointing at the default home, so nothing is fetched twice), a second, private
#   set of services runs beside the default one.
#
# Runs fine as root (CI does): Cassandra's refusal to run as root lives in its
# bin/cassandra launcher (bypassed there with -R); this script starts the JVM
# directly, so no such check applies.

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TEMPLATES="$SCRIPT_DIR/services"

SERVICES_HOME="${LEDGER_SERVICES_HOME:-${HOME:?set HOME or LEDGER_SERVICES_HOME}/.cache/session-ledger/services}"
KAFKA_VERSION="${LEDGER_KAFKA_VERSION:-4.1.1}"
CASSANDRA_VERSION="${LEDGER_CASSANDRA_VERSION:-5.0.9}"
KAFKA_HEAP="${LEDGER_KAFKA_HEAP:-512m}"
CASSANDRA_HEAP="${LEDGER_CASSANDRA_HEAP:-1G}"
KAFKA_AUTO_CREATE_TOPICS="${LEDGER_KAFKA_AUTO_CREATE_TOPICS:-false}"
read -r -a KAFKA_EXTRA_OPTS <<<"${LEDGER_KAFKA_JVM_OPTS:-}"
read -r -a CASS_EXTRA_OPTS <<<"${LEDGER_CASSANDRA_JVM_OPTS:-}"
START_TIMEOUT="${LEDGER_SERVICES_START_TIMEOUT:-240}"
USE_CDS="${LEDGER_SERVICES_CDS:-1}"
STOP_TIMEOUT="${LEDGER_SERVICES_STOP_TIMEOUT:-45}"
KAFKA_PORT="${LEDGER_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT=$((KAFKA_PORT + 1))
CQL_PORT="${LEDGER_CQL_PORT:-9042}"
CASS_STORAGE_PORT="${LEDGER_CASSANDRA_STORAGE_PORT:-7000}"
CASS_JMX_PORT="${LEDGER_CASSANDRA_JMX_PORT:-7199}"

JARS_HOME="${LEDGER_SERVICES_JARS:-$SERVICES_HOME}"
WEST_KAFKA_PORT="${LEDGER_WEST_KAFKA_PORT:-9192}"
MIRROR_TOPICS="${LEDGER_MIRROR_TOPICS:-session-events,regional-.*}"
MIRROR_REFRESH_SECONDS="${LEDGER_MIRROR_REFRESH_SECONDS:-2}"
MIRROR_HEAP="${LEDGER_MIRROR_HEAP:-384m}"
M2_REPO="$JARS_HOME/m2"

KAFKA_DIR="$SERVICES_HOME/kafka"
KAFKA_LIB="$JARS_HOME/kafka/lib"
KAFKA_CONF="$KAFKA_DIR/config"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_LOGS="$KAFKA_DIR/logs"
KAFKA_PID="$KAFKA_DIR/kafka.pid"
KAFKA_MAIN="kafka.Kafka"
KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"

CASS_DIR="$SERVICES_HOME/cassandra"
CASS_LIB="$JARS_HOME/cassandra/lib"
CASS_CONF="$CASS_DIR/conf"
CASS_DATA="$CASS_DIR/data"
CASS_LOGS="$CASS_DIR/logs"
CASS_PID="$CASS_DIR/cassandra.pid"
CASS_MAIN="org.apache.cassandra.service.CassandraDaemon"

WEST_HOME="$SERVICES_HOME/west"
MIRROR_DIR="$SERVICES_HOME/mirror"
MIRROR_LIB="$JARS_HOME/mirror/lib"
MIRROR_LOGS="$MIRROR_DIR/logs"
MIRROR_PID="$MIRROR_DIR/mirror.pid"
MIRROR_MAIN="org.apache.kafka.connect.mirror.MirrorMaker"

JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
JAVA_VERSION="" # set by check_java
CDS_OPTS=()     # set by cds_opts

# ---------------------------------------------------------------- helpers --

log() { printf '[services] %s\n' "$*"; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '/^# Usage:/,/^# Needs:/{/^# Needs:/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

now() { date +%s; }

# tcp_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
tcp_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pid_of FILE MAIN_CLASS: print the pid recorded in FILE if that process is alive
# and really is our JVM (guards against a stale file and a recycled pid).
pid_of() {
  local file="$1" main="$2" pid
  [[ -f "$file" ]] || return 1
  pid="$(<"$file")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- " $main " || return 1
  printf '%s\n' "$pid"
}

# tail_log FILE...: show the end of each non-empty log, for error reports.
tail_log() {
  local f
  for f in "$@"; do
    if [[ -s "$f" ]]; then
      printf -- '----- last 40 lines of %s -----\n' "$f" >&2
      tail -n 40 "$f" >&2
      printf -- '-----\n' >&2
    fi
  done
}

# render TEMPLATE DEST KEY=VALUE...: copy a template replacing @KEY@ tokens.
render() {
  local src="$1" dest="$2" kv key val content
  shift 2
  content="$(<"$src")"
  for kv in "$@"; do
    key="${kv%%=*}"
    val="${kv#*=}"
    content="${content//@"$key"@/$val}"
  done
  printf '%s\n' "$content" >"$dest.tmp"
  mv "$dest.tmp" "$dest"
}

check_java() {
  command -v "$JAVA" >/dev/null 2>&1 || die "java not found (install Java 17+ or set JAVA_HOME)"
  local ver major
  ver="$("$JAVA" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')"
  major="${ver%%.*}"
  [[ "$major" =~ ^[0-9]+$ && "$major" -ge 17 ]] ||
    die "Java 17 or newer is needed (Kafka 4 and Cassandra 5); found '$ver' at $(command -v "$JAVA")"
  JAVA_VERSION="${ver//[^0-9A-Za-z._-]/_}"
}

# cds_opts DIR: set CDS_OPTS, the class-data-sharing options of a service JVM.
# The first start (per fetched lib/ and Java version) records the classes it
# loads: the JVM writes DIR/cds-<java>.jsa.tmp when it exits cleanly, and
# stop_one renames it to .jsa. Later starts map that archive, which saves
# 1-3 s of class loading per service on 2 cores. A stale or unusable archive
# is ignored by the JVM (-Xshare:auto), never fatal.
cds_opts() {
  local dir="$1" archive
  CDS_OPTS=()
  [[ "$USE_CDS" == 1 ]] || return 0
  archive="$dir/cds-$JAVA_VERSION.jsa"
  if [[ -f "$archive" ]]; then
    CDS_OPTS=(-XX:SharedArchiveFile="$archive")
  else
    rm -f "$dir"/cds-*.jsa "$dir"/cds-*.jsa.tmp
    CDS_OPTS=(-XX:ArchiveClassesAtExit="$archive.tmp")
  fi
  # The dump lists every class it skips as a warning: keep stdout.log readable.
  CDS_OPTS+=('-Xlog:cds*=off')
}

# ------------------------------------------------------------------ fetch --

# fetch NAME POM LIBDIR VERSION_PROPERTY VERSION: copy the runtime jars of POM
# into LIBDIR once. A marker file records the version; a different version (or
# an interrupted fetch, which leaves no marker) triggers a new fetch.
fetch() {
  local name="$1" pom="$2" lib="$3" prop="$4" version="$5"
  local marker="$lib/.fetched" tmp
  if [[ -f "$marker" && "$(<"$marker")" == "$version" ]]; then
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found (Maven 3 is needed to fetch $name)"
  log "fetching $name $version from Maven Central (once; into $lib)"
  tmp="$lib.partial"
  rm -rf "$tmp"
  mkdir -p "$M2_REPO"
  # -q -B: quiet batch mode. Maven 3.8 still prints bare ANSI resets (ESC[0m)
  # even with -Dstyle.color=never: the sed drops them (pipefail keeps mvn's status).
  if ! mvn -q -B -Dstyle.color=never -f "$pom" \
      -Dmaven.repo.local="$M2_REPO" \
      -D"$prop"="$version" \
      -DincludeScope=runtime \
      -DoutputDirectory="$tmp" \
      dependency:copy-dependencies 2>&1 |
      sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d'; then
    rm -rf "$tmp"
    die "Maven could not fetch $name $version (see the output above)"
  fi
  rm -rf "$lib"
  mv "$tmp" "$lib"
  rm -f "$(dirname "$lib")"/cds-*.jsa # recorded against the old jars
  printf '%s\n' "$version" >"$marker"
}

# ------------------------------------------------------------------ kafka --

kafka_configure() {
  mkdir -p "$KAFKA_CONF" "$KAFKA_DATA" "$KAFKA_LOGS"
  render "$TEMPLATES/kafka-server.properties" "$KAFKA_CONF/server.properties" \
    "KAFKA_DATA_DIR=$KAFKA_DATA" "KAFKA_AUTO_CREATE_TOPICS=$KAFKA_AUTO_CREATE_TOPICS" \
    "KAFKA_PORT=$KAFKA_PORT" "KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT"
  render "$TEMPLATES/kafka-log4j2.xml" "$KAFKA_CONF/log4j2.xml" "KAFKA_LOG_DIR=$KAFKA_LOGS"
  # Admin tools log only warnings, to stderr.
  cat >"$KAFKA_CONF/tools-log4j2.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders><Console name="stderr" target="SYSTEM_ERR"><PatternLayout pattern="%p %m%n"/></Console></Appenders>
  <Loggers><Root level="WARN"><AppenderRef ref="stderr"/></Root></Loggers>
</Configuration>
EOF
}

# kafka_tool CLASS ARGS...: run one of Kafka's command-line tools on the cached
# jars (small client JVM, bounded in time).
kafka_tool() {
  timeout 120 "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="file://$KAFKA_CONF/tools-log4j2.xml" \
    -cp "$KAFKA_LIB/*" "$@"
}

# Format the KRaft metadata log once (Kafka refuses to start without it:
# "No readable meta.properties files found").
kafka_format() {
  [[ -f "$KAFKA_DATA/meta.properties" ]] && return 0
  local cluster_id
  # What `kafka-storage random-uuid` prints (16 random bytes, base64url without
  # padding, not starting with '-'), without paying for a JVM start.
  while :; do
    cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
    [[ "$cluster_id" != -* ]] && break
  done
  log "formatting Kafka storage (cluster id $cluster_id)"
  # controller.quorum.voters is set (static quorum), so no --standalone here.
  kafka_tool kafka.tools.StorageTool format -t "$cluster_id" \
    -c "$KAFKA_CONF/server.properties" >"$KAFKA_LOGS/format.log" 2>&1 ||
    { tail_log "$KAFKA_LOGS/format.log"; die "kafka-storage format failed"; }
}

kafka_start() {
  kafka_format
  log "starting Kafka $KAFKA_VERSION (heap $KAFKA_HEAP)"
  cds_opts "$KAFKA_DIR"
  : >"$KAFKA_LOGS/stdout.log"
  # setsid: own session, so a Ctrl-C in the calling terminal does not reach it.
  # The inner shell records its pid, then exec's the JVM under that same pid.
  # shellcheck disable=SC2016 # $$, $0 and $@ belong to the inner shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$KAFKA_PID" \
    "$JAVA" -Xms256m -Xmx"$KAFKA_HEAP" \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dkafka.logs.dir="$KAFKA_LOGS" \
    -Dlog4j2.configurationFile="file://$KAFKA_CONF/log4j2.xml" \
    "${CDS_OPTS[@]}" "${KAFKA_EXTRA_OPTS[@]}" \
    -cp "$KAFKA_LIB/*" "$KAFKA_MAIN" "$KAFKA_CONF/server.properties" \
    </dev/null >>"$KAFKA_LOGS/stdout.log" 2>&1 &
}

# Ready = the Kafka port accepts TCP and a metadata request (topic list) succeeds.
kafka_wait() {
  local deadline=$(($(now) + START_TIMEOUT))
  while :; do
    if ! pid_of "$KAFKA_PID" "$KAFKA_MAIN" >/dev/null; then
      sleep 1 # the pid file may not be written yet right after the launch
      if ! pid_of "$KAFKA_PID" "$KAFKA_MAIN" >/dev/null; then
        tail_log "$KAFKA_LOGS/server.log" "$KAFKA_LOGS/stdout.log"
        die "Kafka exited during start-up (logs: $KAFKA_LOGS); '$0 down' stops whatever did start"
      fi
    fi
    if tcp_open "$KAFKA_PORT" &&
      kafka_tool org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "$KAFKA_BOOTSTRAP" --list >/dev/null 2>"$KAFKA_LOGS/ready-check.log"; then
      return 0
    fi
    if (($(now) >= deadline)); then
      tail_log "$KAFKA_LOGS/server.log" "$KAFKA_LOGS/stdout.log" "$KAFKA_LOGS/ready-check.log"
      die "Kafka did not accept clients on $KAFKA_BOOTSTRAP within ${START_TIMEOUT}s (logs: $KAFKA_LOGS); '$0 down' stops whatever did start"
    fi
    sleep 1
  done
}

# -------------------------------------------------------------- cassandra --

cass_configure() {
  mkdir -p "$CASS_CONF" "$CASS_DATA" "$CASS_LOGS"
  render "$TEMPLATES/cassandra.yaml" "$CASS_CONF/cassandra.yaml" "CASSANDRA_DATA_DIR=$CASS_DATA" \
    "CQL_PORT=$CQL_PORT" "CASSANDRA_STORAGE_PORT=$CASS_STORAGE_PORT"
  cp "$TEMPLATES/cassandra-logback.xml" "$CASS_CONF/logback.xml"
  mkdir -p "$CASS_CONF/triggers" # else a WARN every minute: trigger directory missing
}

cass_start() {
  local jamm
  jamm="$(compgen -G "$CASS_LIB/jamm-*.jar" | head -n 1)" ||
    die "jamm agent jar not found in $CASS_LIB (delete $CASS_LIB/.fetched to re-fetch)"

  local -a opts=(
    -Xms"$CASSANDRA_HEAP" -Xmx"$CASSANDRA_HEAP" -Xss256k
    # From Cassandra's conf/jvm-server.options.
    -ea -da:net.openhft...
    -XX:+UseThreadPriorities -XX:+UseTLAB -XX:+ResizeTLAB -XX:+PerfDisableSharedMem
    -Djava.net.preferIPv4Stack=true
    # G1 settings from conf/jvm17-server.options.
    -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1
    -XX:G1HeapRegionSize=16m -XX:G1RSetUpdatingPauseTimePercent=5
    -XX:MaxGCPauseMillis=300 -XX:InitiatingHeapOccupancyPercent=70
    -XX:+CrashOnOutOfMemoryError
    # JPMS list from conf/jvm17-server.options (Cassandra 5.0 on Java 17).
    -Djdk.attach.allowAttachSelf=true
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
    --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
    --add-exports java.sql/java.sql=ALL-UNNAMED
    --add-exports java.base/java.lang.ref=ALL-UNNAMED
    --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
    --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
    --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
    --add-opens java.base/java.lang.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
    --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
    --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
    --add-opens java.base/jdk.internal.math=ALL-UNNAMED
    --add-opens java.base/jdk.internal.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
    --add-opens java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens java.base/java.io=ALL-UNNAMED
    --add-opens java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
    --add-opens java.base/java.lang=ALL-UNNAMED
    --add-opens java.base/java.util=ALL-UNNAMED
    -Dio.netty.tryReflectionSetAccessible=true
    -Dio.netty.allocator.useCacheForAllThreads=true
    -Dio.netty.allocator.maxOrder=11
    # What bin/cassandra and conf/cassandra-env.sh would add.
    -javaagent:"$jamm"
    -Dcassandra.jmx.local.port="$CASS_JMX_PORT"
    -Dcassandra-foreground=yes
    -Dcassandra.config="file://$CASS_CONF/cassandra.yaml"
    -Dcassandra.storagedir="$CASS_DATA"
    -Dcassandra.logdir="$CASS_LOGS"
    -Dcassandra.triggers_dir="$CASS_CONF/triggers"
    -Dlogback.configurationFile="file://$CASS_CONF/logback.xml"
    # Test-node shortcuts (switches Cassandra's own test suites use): no gossip
    # settling wait, superuser-setup or shutdown-announce delay on a lone node,
    # and no fsync / forced flushes of the system and schema tables.
    # Durability across a crash is not a goal here (a clean `down` still
    # drains); start-up and CREATE KEYSPACE/TABLE get much faster.
    -Dcassandra.skip_wait_for_gossip_to_settle=0
    -Dcassandra.superuser_setup_delay_ms=0
    -Dcassandra.shutdown_announce_in_ms=0
    -Dcassandra.unsafesystem=true
    -Dcassandra.test.flush_local_schema_changes=false
    -Dcassandra.skip_sync=true
    "${CASS_EXTRA_OPTS[@]}"
  )

  cds_opts "$CASS_DIR"
  if ((${#CDS_OPTS[@]})); then
    # jamm is a -javaagent: CDS then needs this diagnostic switch, both when
    # recording and when using the archive (test node only, as the JVM warns).
    opts+=(-XX:+UnlockDiagnosticVMOptions -XX:+AllowArchivingWithJavaAgent "${CDS_OPTS[@]}")
  fi

  log "starting Cassandra $CASSANDRA_VERSION (heap $CASSANDRA_HEAP)"
  : >"$CASS_LOGS/stdout.log"
  # The ready check greps system.log for this run only: start it empty.
  [[ -f "$CASS_LOGS/system.log" ]] && mv "$CASS_LOGS/system.log" "$CASS_LOGS/system.log.prev"
  # shellcheck disable=SC2016 # $$, $0 and $@ belong to the inner shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$CASS_PID" \
    "$JAVA" "${opts[@]}" -cp "$CASS_LIB/*" "$CASS_MAIN" \
    </dev/null >>"$CASS_LOGS/stdout.log" 2>&1 &
}

# cql_ping: speak the CQL native protocol (v4) to 127.0.0.1:$CQL_PORT with bash alone:
# STARTUP -> expect READY, then QUERY "SELECT release_version FROM system.local"
# -> expect RESULT. Prints the release version. Needs no cqlsh and no driver.
# Frame header (9 bytes): version 0x04 (0x84 in replies), flags, stream id (2),
# opcode (1), body length (4).
cql_ping() {
  # A child bash so that `timeout` can bound reads from a hung server.
  CQL_PORT="$CQL_PORT" timeout 15 bash -c "$(declare -f cql_ping_unbounded); cql_ping_unbounded"
}

cql_ping_unbounded() {
  set -euo pipefail
  local hdr q len
  exec 3<>"/dev/tcp/127.0.0.1/$CQL_PORT"
  # STARTUP (opcode 0x01), body: string map {"CQL_VERSION": "3.0.0"} = 22 bytes.
  printf '\x04\x00\x00\x01\x01\x00\x00\x00\x16' >&3
  printf '\x00\x01\x00\x0bCQL_VERSION\x00\x053.0.0' >&3
  hdr="$(dd bs=9 count=1 iflag=fullblock <&3 2>/dev/null | od -An -v -tx1 | tr -d ' \n')"
  [[ "${hdr:0:2}" == 84 && "${hdr:8:2}" == 02 ]] || { echo "STARTUP: no READY (header '$hdr')" >&2; return 1; }
  # QUERY (opcode 0x07), body: [long string query][consistency ONE][flags 0].
  q="SELECT release_version FROM system.local"
  # shellcheck disable=SC2059 # the format is built on purpose: length bytes
  printf "\x04\x00\x00\x02\x07\x00\x00\x00\x$(printf %02x $((4 + ${#q} + 3)))" >&3
  # shellcheck disable=SC2059
  printf "\x00\x00\x00\x$(printf %02x ${#q})%s\x00\x01\x00" "$q" >&3
  hdr="$(dd bs=9 count=1 iflag=fullblock <&3 2>/dev/null | od -An -v -tx1 | tr -d ' \n')"
  [[ "${hdr:0:2}" == 84 && "${hdr:8:2}" == 08 ]] || { echo "QUERY: no RESULT (header '$hdr')" >&2; return 1; }
  len=$((16#${hdr:10:8}))
  # The rows body ends with the release_version text, e.g. 5.0.9.
  dd bs="$len" count=1 iflag=fullblock <&3 2>/dev/null | tr -c '0-9.' ' ' | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | tail -n 1
}

# Ready = the log says the native transport listens, and a CQL query answers.
cass_wait() {
  local deadline=$(($(now) + START_TIMEOUT))
  while :; do
    if ! pid_of "$CASS_PID" "$CASS_MAIN" >/dev/null; then
      sleep 1
      if ! pid_of "$CASS_PID" "$CASS_MAIN" >/dev/null; then
        tail_log "$CASS_LOGS/system.log" "$CASS_LOGS/stdout.log"
        die "Cassandra exited during start-up (logs: $CASS_LOGS); '$0 down' stops whatever did start"
      fi
    fi
    if grep -qs "Starting listening for CQL clients" "$CASS_LOGS/system.log" &&
      tcp_open "$CQL_PORT" && cql_ping >/dev/null 2>"$CASS_LOGS/ready-check.log"; then
      return 0
    fi
    if (($(now) >= deadline)); then
      tail_log "$CASS_LOGS/system.log" "$CASS_LOGS/stdout.log" "$CASS_LOGS/ready-check.log"
      die "Cassandra did not accept CQL clients on 127.0.0.1:$CQL_PORT within ${START_TIMEOUT}s (logs: $CASS_LOGS); '$0 down' stops whatever did start"
    fi
    sleep 1
  done
}

# --------------------------------------------------------------- commands --

# stop_one NAME PIDFILE MAIN_CLASS
# A hung broker (SIGSTOP): its connections stay open and nothing answers, as with a
# broker stuck in a long GC pause or behind a half-open network path.
signal_one() {
  local name="$1" file="$2" main="$3" signal="$4" done="$5" pid
  if ! pid="$(pid_of "$file" "$main")"; then
    log "$name: not running"
    return 1
  fi
  kill -"$signal" "$pid"
  log "$name: $done (pid $pid)"
}

stop_one() {
  local name="$1" file="$2" main="$3" pid waited=0 killed=0 tmp
  if ! pid="$(pid_of "$file" "$main")"; then
    rm -f "$file"
    log "$name: not running"
    return 0
  fi
  log "$name: stopping (pid $pid, SIGTERM)"
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if ((waited >= STOP_TIMEOUT)); then
      log "$name: still running after ${STOP_TIMEOUT}s, SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      killed=1
      sleep 1
      break
    fi
    sleep 1
    waited=$((waited + 1))
  done
  rm -f "$file"
  # A class-data archive recorded by this run is complete only after a clean exit.
  for tmp in "$(dirname "$file")"/cds-*.jsa.tmp; do
    [[ -f "$tmp" ]] || continue
    if ((killed)); then rm -f "$tmp"; else mv -f "$tmp" "${tmp%.tmp}"; fi
  done
  log "$name: stopped"
}

cmd_down() {
  # The link and the second region first (when they run), then the default set.
  if [[ -f "$MIRROR_PID" || -d "$WEST_HOME" ]]; then regions_down; fi
  # Both at once: each takes a few seconds to shut down cleanly.
  stop_one kafka "$KAFKA_PID" "$KAFKA_MAIN" &
  local kpid=$!
  stop_one cassandra "$CASS_PID" "$CASS_MAIN"
  wait "$kpid"
}

cmd_status() {
  local rc=0 pid
  if [[ "${1:-}" == --regions && "${2:-1}" != 1 ]]; then regions_status || rc=1; fi
  if pid="$(pid_of "$KAFKA_PID" "$KAFKA_MAIN")" && tcp_open "$KAFKA_PORT"; then
    log "kafka:     up   (pid $pid, $KAFKA_BOOTSTRAP)"
  elif [[ -n "${pid:-}" ]]; then
    log "kafka:     starting (pid $pid, $KAFKA_BOOTSTRAP not accepting yet)"; rc=1
  else
    log "kafka:     down"; rc=1
  fi
  pid=""
  if pid="$(pid_of "$CASS_PID" "$CASS_MAIN")" && tcp_open "$CQL_PORT"; then
    log "cassandra: up   (pid $pid, 127.0.0.1:$CQL_PORT)"
  elif [[ -n "${pid:-}" ]]; then
    log "cassandra: starting (pid $pid, 127.0.0.1:$CQL_PORT not accepting yet)"; rc=1
  else
    log "cassandra: down"; rc=1
  fi
  return "$rc"
}

cmd_up() {
  local fresh="${LEDGER_SERVICES_FRESH:-0}" regions=1
  while (($#)); do
    case "$1" in
      --fresh) fresh=1 ;;
      --regions) regions="${2:-}"; shift ;;
      --regions=*) regions="${1#--regions=}" ;;
      *) die "unknown option for up: $1" ;;
    esac
    shift
  done

  if [[ "$fresh" == 1 ]]; then
    cmd_down
    log "--fresh: wiping data and logs under $KAFKA_DIR, $CASS_DIR and $WEST_HOME"
    rm -rf "$KAFKA_DATA" "$KAFKA_LOGS" "$CASS_DATA" "$CASS_LOGS" "$WEST_HOME/kafka/data" \
      "$WEST_HOME/kafka/logs" "$MIRROR_LOGS"
  fi

  local kafka_running=0 cass_running=0
  pid_of "$KAFKA_PID" "$KAFKA_MAIN" >/dev/null && kafka_running=1
  pid_of "$CASS_PID" "$CASS_MAIN" >/dev/null && cass_running=1
  if ((kafka_running && cass_running)) && tcp_open "$KAFKA_PORT" && tcp_open "$CQL_PORT"; then
    log "already up: kafka $KAFKA_BOOTSTRAP, cassandra 127.0.0.1:$CQL_PORT"
    regions_up "$regions"
    return 0
  fi

  check_java
  mkdir -p "$SERVICES_HOME"
  local t0
  t0=$(now)
  ((kafka_running)) || fetch kafka "$TEMPLATES/kafka-pom.xml" "$KAFKA_LIB" kafka.version "$KAFKA_VERSION"
  ((cass_running)) || fetch cassandra "$TEMPLATES/cassandra-pom.xml" "$CASS_LIB" cassandra.version "$CASSANDRA_VERSION"

  # Before starting anything: the ports of a service we are about to start
  # must be free (something else there, e.g. a leftover from another cache
  # dir, would make our JVM die or, worse, the tests talk to the wrong server).
  local port
  if ((!kafka_running)); then
    for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
      tcp_open "$port" && die "port $port is already in use, but not by our Kafka (no live $KAFKA_PID)"
    done
  fi
  if ((!cass_running)); then
    for port in "$CQL_PORT" "$CASS_STORAGE_PORT" "$CASS_JMX_PORT"; do
      tcp_open "$port" && die "port $port is already in use, but not by our Cassandra (no live $CASS_PID)"
    done
  fi

  # Start both before waiting for either: start-ups overlap.
  if ((cass_running)); then
    log "cassandra: already running"
  else
    cass_configure
    cass_start
  fi
  if ((kafka_running)); then
    log "kafka: already running"
  else
    kafka_configure
    kafka_start
  fi

  kafka_wait
  log "kafka: up on $KAFKA_BOOTSTRAP ($(($(now) - t0))s)"
  cass_wait
  log "cassandra: up on 127.0.0.1:$CQL_PORT ($(($(now) - t0))s)"
  regions_up "$regions"
}

# ---------------------------------------------------------------- regions --

# west ARGS...: run this script for the west region's broker (its own state
# directory and ports, the same jars).
west() {
  LEDGER_SERVICES_HOME="$WEST_HOME" LEDGER_SERVICES_JARS="$JARS_HOME" \
    LEDGER_KAFKA_PORT="$WEST_KAFKA_PORT" "${BASH_SOURCE[0]}" "$@"
}

# Starts this instance's Kafka alone (no Cassandra), unless it runs.
cmd_up_kafka() {
  if pid_of "$KAFKA_PID" "$KAFKA_MAIN" >/dev/null && tcp_open "$KAFKA_PORT"; then
    log "kafka: already up on $KAFKA_BOOTSTRAP"
    return 0
  fi
  check_java
  fetch kafka "$TEMPLATES/kafka-pom.xml" "$KAFKA_LIB" kafka.version "$KAFKA_VERSION"
  if ! pid_of "$KAFKA_PID" "$KAFKA_MAIN" >/dev/null; then
    local port
    for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
      tcp_open "$port" && die "port $port is already in use, but not by our Kafka (no live $KAFKA_PID)"
    done
    kafka_configure
    kafka_start
  fi
  kafka_wait
  log "kafka: up on $KAFKA_BOOTSTRAP"
}

mirror_start() {
  if pid_of "$MIRROR_PID" "$MIRROR_MAIN" >/dev/null; then
    log "mirror: already running"
    return 0
  fi
  check_java
  fetch kafka "$TEMPLATES/kafka-pom.xml" "$KAFKA_LIB" kafka.version "$KAFKA_VERSION"
  fetch mirror "$TEMPLATES/mirror-pom.xml" "$MIRROR_LIB" kafka.version "$KAFKA_VERSION"
  mkdir -p "$MIRROR_DIR" "$MIRROR_LOGS"
  render "$TEMPLATES/mm2.properties" "$MIRROR_DIR/mm2.properties" \
    "EAST_PORT=$KAFKA_PORT" "WEST_PORT=$WEST_KAFKA_PORT" "MIRROR_TOPICS=$MIRROR_TOPICS" \
    "MIRROR_REFRESH_SECONDS=$MIRROR_REFRESH_SECONDS"
  render "$TEMPLATES/kafka-log4j2.xml" "$MIRROR_DIR/log4j2.xml" "KAFKA_LOG_DIR=$MIRROR_LOGS"
  log "starting MirrorMaker 2 (east 127.0.0.1:$KAFKA_PORT <-> west 127.0.0.1:$WEST_KAFKA_PORT, topics $MIRROR_TOPICS)"
  : >"$MIRROR_LOGS/stdout.log"
  [[ -f "$MIRROR_LOGS/server.log" ]] && mv "$MIRROR_LOGS/server.log" "$MIRROR_LOGS/server.log.prev"
  # shellcheck disable=SC2016 # $$, $0 and $@ belong to the inner shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$MIRROR_PID" \
    "$JAVA" -Xms128m -Xmx"$MIRROR_HEAP" -XX:+UseSerialGC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="file://$MIRROR_DIR/log4j2.xml" \
    -cp "$KAFKA_LIB/*:$MIRROR_LIB/*" "$MIRROR_MAIN" "$MIRROR_DIR/mm2.properties" \
    </dev/null >>"$MIRROR_LOGS/stdout.log" 2>&1 &
  # Ready = both replication flows created their source connector; remote topics
  # appear within the refresh interval.
  local deadline=$(($(now) + START_TIMEOUT)) created
  while :; do
    sleep 1
    if ! pid_of "$MIRROR_PID" "$MIRROR_MAIN" >/dev/null; then
      tail_log "$MIRROR_LOGS/server.log" "$MIRROR_LOGS/stdout.log"
      die "MirrorMaker 2 exited during start-up (logs: $MIRROR_LOGS)"
    fi
    # One source connector per flow (east->west, west->east).
    created="$(grep -cs "Finished creating connector MirrorSourceConnector" "$MIRROR_LOGS/server.log" || true)"
    ((${created:-0} >= 2)) && break
    if (($(now) >= deadline)); then
      tail_log "$MIRROR_LOGS/server.log" "$MIRROR_LOGS/stdout.log"
      die "MirrorMaker 2 did not start within ${START_TIMEOUT}s (logs: $MIRROR_LOGS)"
    fi
  done
  log "mirror: up (logs $MIRROR_LOGS)"
}

# The second region and the link: west's broker and MirrorMaker 2.
regions_up() {
  local regions="$1"
  [[ "$regions" == 1 ]] && return 0
  [[ "$regions" == 2 ]] || die "--regions supports 1 or 2, not '$regions'"
  west up-kafka
  mirror_start
}

regions_down() {
  stop_one mirror "$MIRROR_PID" "$MIRROR_MAIN"
  if [[ -d "$WEST_HOME" ]]; then west stop-kafka; fi
}

regions_status() {
  local rc=0 pid
  west status-kafka || rc=1
  if pid="$(pid_of "$MIRROR_PID" "$MIRROR_MAIN")"; then
    log "mirror:    up   (pid $pid, east 127.0.0.1:$KAFKA_PORT <-> west 127.0.0.1:$WEST_KAFKA_PORT)"
  else
    log "mirror:    down"; rc=1
  fi
  return "$rc"
}

cmd_status_kafka() {
  local pid
  if pid="$(pid_of "$KAFKA_PID" "$KAFKA_MAIN")" && tcp_open "$KAFKA_PORT"; then
    log "kafka:     up   (pid $pid, $KAFKA_BOOTSTRAP; $SERVICES_HOME)"
  else
    log "kafka:     down ($KAFKA_BOOTSTRAP; $SERVICES_HOME)"; return 1
  fi
}

main() {
  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    status) cmd_status "$@" ;;
    stop-kafka) stop_one kafka "$KAFKA_PID" "$KAFKA_MAIN" ;;
    stop-mirror) stop_one mirror "$MIRROR_PID" "$MIRROR_MAIN" ;;
    start-mirror) mirror_start ;;
    pause-mirror) signal_one mirror "$MIRROR_PID" "$MIRROR_MAIN" STOP paused ;;
    resume-mirror) signal_one mirror "$MIRROR_PID" "$MIRROR_MAIN" CONT resumed ;;
    down-regions) regions_down ;;
    # Internal (the west region runs this script with its own home and ports).
    up-kafka) cmd_up_kafka ;;
    status-kafka) cmd_status_kafka ;;
    stop-cassandra) stop_one cassandra "$CASS_PID" "$CASS_MAIN" ;;
    pause-kafka) signal_one kafka "$KAFKA_PID" "$KAFKA_MAIN" STOP paused ;;
    resume-kafka) signal_one kafka "$KAFKA_PID" "$KAFKA_MAIN" CONT resumed ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
