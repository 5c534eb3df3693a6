#!/usr/bin/env bash
# Device-side driver for the platform on the GPU machine (not project code; .gpu/ is excluded from git).
# Steps: c1 | chunk | install | platform | search | fixed | pack
set -u
R=$PWD; G=/tmp/gpay; W=/tmp/gw; SITE=/tmp/site; PROJ=$W/proj; mkdir -p $G $W
for c in $R/.gpu/c0?; do [ -d "$c" ] || continue; rm -rf $G/$(basename $c); mv $c $G/; done
LOG=$OUT/steps.log
cd $PROJ 2>/dev/null || true
export PYTHONPATH=$SITE:$PROJ PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
export DAGSTER_HOME=$W/dagster_home; mkdir -p $DAGSTER_HOME; cp -n $PROJ/dagster.yaml $DAGSTER_HOME/ 2>/dev/null
MD="python3 -m mlperf_assets.cli"; cd_proj() { cd $PROJ; }
P=$W/platform   # results of the pipeline: DuckDB, artifacts, report
say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a $LOG; }
pack() { tar -C $W -czf $OUT/platform.tgz platform 2>/dev/null; cp $W/*.log $OUT/ 2>/dev/null; }
t0=$(date +%s)
for step in "$@"; do
  say "=== $step (t+$(( $(date +%s) - t0 ))s)"
  case $step in
  c1)
    (cd $G/c01 && sha256sum -c SHA256SUMS) 2>&1 | grep -v ': OK$' | tee -a $LOG
    python3 -c "import tarfile,sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" $G/c01/inputs.tar.xz $W; cp -n $PROJ/dagster.yaml $DAGSTER_HOME/; cd $PROJ; ls -la $W $W/tokenizer | tee -a $LOG
    nvidia-smi | tee -a $LOG; nproc; free -g | tee -a $LOG; df -h /tmp | tee -a $LOG
    setsid nohup python3 $PROJ/benchmarks/gpu/random_llama.py $W/model --tokenizer $W/tokenizer > $W/build_model.log 2>&1 < /dev/null &
    say "model build started (pid $!)" ;;
  chunk)
    du -sh $G/c0* | tee -a $LOG; for c in $G/c0*; do (cd $c && sha256sum -c SHA256SUMS 2>&1 | grep -v ': OK$'); done | tee -a $LOG
    tail -3 $W/build_model.log | tee -a $LOG ;;
  install)
    got=$(cat $G/c0*/blob.p* | sha256sum | cut -d' ' -f1); want=$(cat $G/c01/blob.sha256)
    [ "$got" = "$want" ] || { say "PAYLOAD MISMATCH"; exit 3; }
    cat $G/c0*/blob.p* > $W/blob; S=$(cat $G/c01/site_size); mkdir -p $SITE
    head -c $S $W/blob | python3 -c "import lzma,sys,shutil; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer, 1<<20)" | tar -C $SITE -xf -; tail -c +$((S+1)) $W/blob | python3 -c "import lzma,sys,shutil; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer, 1<<20)" | tar -C $SITE -xf -; rm -f $W/blob
    say "unpacked: $(du -sh $SITE | cut -f1)"
    python3 -c "import vllm, torch, dagster, duckdb, pandas, pyarrow, matplotlib, plotly, mlperf_loadgen; print('vllm', vllm.__version__, 'dagster', dagster.__version__, 'duckdb', duckdb.__version__, torch.cuda.get_device_name())" 2>&1 | grep -v -i warn | tail -5 | tee -a $LOG
    python3 -c "import mlperf_assets.definitions as d; print('definitions ok')" 2>&1 | tail -3 | tee -a $LOG
    tail -3 $W/build_model.log | tee -a $LOG ;;
  configs)
    python3 $PROJ/gpu_configs.py $PROJ/config/examples/gpu-local.yaml $W $P ${SERVER_QPS:-38} ${INTERACTIVE_QPS:-20} 2>&1 | tee -a $LOG ;;
  wait_model)
    for i in $(seq 1 400); do [ -f $W/model/.built ] && break; sleep 1; done; tail -3 $W/build_model.log | tee -a $LOG ;;
  main)
    timeout -k 20 ${OFF_TO:-240} $MD run --config $W/cfg/main.yaml --scenario Offline --no-progress --no-report > $W/run_offline.log 2>&1; say "run Offline rc=$?"; tail -12 $W/run_offline.log | tee -a $LOG
    sps=$($MD query "select samples_per_s from run_summary where scenario='Offline' and mode='performance' order by started_at desc limit 1" --db $P/mlperf.duckdb --format csv | tail -1)
    SERVER_QPS=$(python3 -c "print(round(0.85*float('$sps'),1))" 2>/dev/null || echo 30); INTERACTIVE_QPS=$(python3 -c "print(round(0.5*float('$sps'),1))" 2>/dev/null || echo 15)
    echo "$SERVER_QPS $INTERACTIVE_QPS" > $W/qps; say "Offline samples/s $sps -> Server $SERVER_QPS, Interactive $INTERACTIVE_QPS"
    python3 $PROJ/gpu_configs.py $PROJ/config/examples/gpu-local.yaml $W $P $SERVER_QPS $INTERACTIVE_QPS | tee -a $LOG
    timeout -k 20 ${SRV_TO:-220} $MD run --config $W/cfg/main.yaml --scenario Server --no-progress --no-report > $W/run_server.log 2>&1; say "run Server rc=$?"; tail -12 $W/run_server.log | tee -a $LOG; pack ;;
  interactive)
    timeout -k 20 ${INT_TO:-200} $MD run --config $W/cfg/interactive.yaml --no-progress --no-report > $W/run_interactive.log 2>&1; say "run interactive rc=$?"; tail -15 $W/run_interactive.log | tee -a $LOG; pack ;;
  singlestream)
    timeout -k 20 ${SS_TO:-200} $MD run --config $W/cfg/singlestream.yaml --no-progress --no-report > $W/run_singlestream.log 2>&1; say "run singlestream rc=$?"; tail -15 $W/run_singlestream.log | tee -a $LOG; pack ;;
  search)
    timeout -k 20 ${SEARCH_TO:-480} $MD search-qps --config $W/cfg/main.yaml --scenario ${SEARCH_SCENARIO:-Server} ${SEARCH_ARGS:-} > $W/search_${SEARCH_SCENARIO:-Server}.log 2>&1; say "search rc=$?"; cat $W/search_${SEARCH_SCENARIO:-Server}.log | tail -40 | tee -a $LOG; pack ;;
  report)
    MLPERF_DAGSTER_CONFIG=$W/cfg/main.yaml timeout -k 20 120 $MD report > $W/report.log 2>&1; say "report rc=$?"; tail -10 $W/report.log | tee -a $LOG
    $MD query "select * from run_summary" --db $P/mlperf.duckdb 2>&1 | tee -a $LOG; pack ;;
  esac
done
say "done (t+$(( $(date +%s) - t0 ))s)"; pack
