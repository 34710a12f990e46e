// vtax-vcsim: govmomi's vCenter simulator, made useful for measuring tests.
//
// The stock simulator answers QueryPerf with random values at timestamps counted back from "now".
// This one keeps real time: samples end on multiples of the refresh interval, a sample exists only
// once its interval is over, realtime data is kept for an hour, and a test can set the value a
// counter has for an entity from now on (POST /vtax/counter). It also enforces maxQueryMetrics,
// answers format=csv, and can migrate a VM the way DRS does (POST /vtax/migrate), event included.
//
// Built in GOPATH mode against Debian's golang-github-vmware-govmomi-dev; no network needed.
// On start it prints one JSON line: {"url": ..., "control": ...}.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/simulator/vpx"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const (
	realtimeInterval  = 20   // the interval id clients ask for; the simulated samples use -refresh seconds
	realtimeRetention = 3600 // seconds of realtime data a vCenter keeps
	maxQueryMetricsOp = "config.vpxd.stats.maxQueryMetrics"
)

// change is a counter value that holds from `since` on.
type change struct {
	since time.Time
	value float64
}

// perfManager replaces the simulator's PerformanceManager: same counters, time-true samples.
type perfManager struct {
	simulator.PerformanceManager // by value: the simulator digs the mo type out of the first field
	refresh                      int32
	maxMetrics                   int
	started                      time.Time

	summation map[int32]bool // counters whose values are totals over their interval

	mu      sync.Mutex
	history map[string][]change // "moid/counterKey/instance" → value changes in time order
}

func seriesKey(entity string, counter int32, instance string) string {
	return entity + "/" + strconv.Itoa(int(counter)) + "/" + instance
}

func (p *perfManager) counterKey(name string) (int32, bool) {
	for _, c := range p.PerfCounter {
		if c.GroupInfo.GetElementDescription().Key+"."+c.NameInfo.GetElementDescription().Key+"."+string(c.RollupType) == name {
			return c.Key, true
		}
	}
	return 0, false
}

func (p *perfManager) set(entity string, counter int32, instance string, value float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := seriesKey(entity, counter, instance)
	p.history[key] = append(p.history[key], change{since: time.Now(), value: value})
}

// value is the time-weighted mean of a counter over (end-interval, end]: what a real collector reports.
func (p *perfManager) value(entity types.ManagedObjectReference, id types.PerfMetricId, end time.Time, interval int32) int64 {
	p.mu.Lock()
	changes := p.history[seriesKey(entity.Value, id.CounterId, id.Instance)]
	p.mu.Unlock()
	start := end.Add(-time.Duration(interval) * time.Second)
	fallback := p.stockValue(entity.Type, id.CounterId, end, interval)
	if len(changes) == 0 {
		return fallback
	}
	total, weighted := 0.0, 0.0
	current, from := fallback, start
	for _, c := range changes {
		if !c.since.After(start) {
			current = int64(c.value)
			continue
		}
		if c.since.After(end) {
			break
		}
		seconds := c.since.Sub(from).Seconds()
		weighted += float64(current) * seconds
		total += seconds
		current, from = int64(c.value), c.since
	}
	seconds := end.Sub(from).Seconds()
	weighted += float64(current) * seconds
	total += seconds
	return int64(weighted/total + 0.5)
}

// stockValue is the simulator's recorded 20 s sample pattern, without its random noise, so runs repeat;
// summation counters (totals per interval) are scaled to the interval asked for.
func (p *perfManager) stockValue(kind string, counter int32, end time.Time, interval int32) int64 {
	points := vpx.MetricData[kind][counter]
	if len(points) == 0 {
		return 0
	}
	value := points[(end.Unix()/int64(interval))%int64(len(points))]
	if p.summation[counter] {
		value = value * int64(interval) / realtimeInterval
	}
	return value
}

func (p *perfManager) QueryPerfProviderSummary(ctx *simulator.Context, req *types.QueryPerfProviderSummary) soap.HasFault {
	body := p.PerformanceManager.QueryPerfProviderSummary(ctx, req).(*methods.QueryPerfProviderSummaryBody)
	if body.Res != nil && body.Res.Returnval.CurrentSupported {
		body.Res.Returnval.RefreshRate = p.refresh
	}
	return body
}

// instances expands the "*" instance the way vCenter does: the aggregate plus one per vCPU/thread.
func (p *perfManager) instances(entity types.ManagedObjectReference, id types.PerfMetricId) []types.PerfMetricId {
	if id.Instance != "*" {
		return []types.PerfMetricId{id}
	}
	out := []types.PerfMetricId{{CounterId: id.CounterId}}
	cpus := 0
	switch obj := simulator.Map.Get(entity).(type) {
	case *simulator.HostSystem:
		cpus = int(obj.Hardware.CpuInfo.NumCpuThreads)
	case *simulator.VirtualMachine:
		cpus = int(obj.Summary.Config.NumCpu)
	}
	for i := 0; i < cpus; i++ {
		out = append(out, types.PerfMetricId{CounterId: id.CounterId, Instance: strconv.Itoa(i)})
	}
	return out
}

func (p *perfManager) QueryPerf(ctx *simulator.Context, req *types.QueryPerf) soap.HasFault {
	body := &methods.QueryPerfBody{Res: new(types.QueryPerfResponse)}
	metrics := 0
	for _, qs := range req.QuerySpec {
		metrics += len(qs.MetricId)
	}
	if p.maxMetrics > 0 && metrics > p.maxMetrics {
		body.Fault_ = simulator.Fault(
			fmt.Sprintf("querySpec.size %d exceeds %s %d", metrics, maxQueryMetricsOp, p.maxMetrics),
			&types.InvalidArgument{InvalidProperty: "querySpec.size"})
		return body
	}
	now := time.Now()
	for _, qs := range req.QuerySpec {
		if simulator.Map.Get(qs.Entity) == nil {
			body.Fault_ = simulator.Fault("", &types.ManagedObjectNotFound{Obj: qs.Entity})
			return body
		}
		body.Res.Returnval = append(body.Res.Returnval, p.entityMetrics(qs, now))
	}
	return body
}

func (p *perfManager) entityMetrics(qs types.PerfQuerySpec, now time.Time) types.BasePerfEntityMetricBase {
	interval, oldest := qs.IntervalId, p.started
	if interval == realtimeInterval || interval == p.refresh || interval <= 0 {
		interval = p.refresh
		if limit := now.Add(-realtimeRetention * time.Second); limit.After(oldest) {
			oldest = limit
		}
	}
	step := time.Duration(interval) * time.Second
	end := now
	if qs.EndTime != nil && qs.EndTime.Before(end) {
		end = *qs.EndTime
	}
	start := oldest
	if qs.StartTime != nil && qs.StartTime.After(start) {
		start = *qs.StartTime
	}
	var stamps []time.Time // sample end times in (start, end], each a whole interval in the past
	for t := end.Truncate(step); t.After(start) && !t.Before(oldest.Add(step)); t = t.Add(-step) {
		stamps = append([]time.Time{t}, stamps...)
	}
	if qs.MaxSample > 0 && len(stamps) > int(qs.MaxSample) {
		stamps = stamps[len(stamps)-int(qs.MaxSample):]
	}
	var ids []types.PerfMetricId
	for _, id := range qs.MetricId {
		ids = append(ids, p.instances(qs.Entity, id)...)
	}
	values := make([][]int64, len(ids))
	for i, id := range ids {
		for _, t := range stamps {
			values[i] = append(values[i], p.value(qs.Entity, id, t, interval))
		}
	}
	if qs.Format == string(types.PerfFormatCsv) {
		info := make([]string, 0, 2*len(stamps))
		for _, t := range stamps {
			info = append(info, strconv.Itoa(int(interval)), t.UTC().Format(time.RFC3339))
		}
		metric := &types.PerfEntityMetricCSV{SampleInfoCSV: strings.Join(info, ",")}
		metric.Entity = qs.Entity
		for i, id := range ids {
			text := make([]string, len(values[i]))
			for j, v := range values[i] {
				text[j] = strconv.FormatInt(v, 10)
			}
			metric.Value = append(metric.Value, types.PerfMetricSeriesCSV{
				PerfMetricSeries: types.PerfMetricSeries{Id: id}, Value: strings.Join(text, ",")})
		}
		return metric
	}
	metric := &types.PerfEntityMetric{}
	metric.Entity = qs.Entity
	for _, t := range stamps {
		metric.SampleInfo = append(metric.SampleInfo, types.PerfSampleInfo{Timestamp: t, Interval: interval})
	}
	for i, id := range ids {
		metric.Value = append(metric.Value, &types.PerfMetricIntSeries{PerfMetricSeries: types.PerfMetricSeries{Id: id}, Value: values[i]})
	}
	return metric
}

// find resolves an entity by managed object id or by inventory name.
func find(kind, name string) mo.Entity {
	for _, e := range simulator.Map.All(kind) {
		if e.Reference().Value == name || e.Entity().Name == name {
			return e
		}
	}
	return nil
}

type counterRequest struct {
	Entity   string  `json:"entity"`
	Kind     string  `json:"kind"` // HostSystem or VirtualMachine; default: either
	Counter  string  `json:"counter"`
	Instance string  `json:"instance"`
	Value    float64 `json:"value"`
}

type migrateRequest struct {
	VM     string  `json:"vm"`
	Host   string  `json:"host"`
	DelayS float64 `json:"delay_s"`
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (p *perfManager) serveCounter(w http.ResponseWriter, r *http.Request) {
	var req counterRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		reply(w, 400, map[string]string{"error": err.Error()})
		return
	}
	counter, ok := p.counterKey(req.Counter)
	if !ok {
		reply(w, 404, map[string]string{"error": "no counter " + req.Counter})
		return
	}
	var entity mo.Entity
	for _, kind := range []string{"HostSystem", "VirtualMachine"} {
		if req.Kind == "" || req.Kind == kind {
			if entity = find(kind, req.Entity); entity != nil {
				break
			}
		}
	}
	if entity == nil {
		reply(w, 404, map[string]string{"error": "no entity " + req.Entity})
		return
	}
	p.set(entity.Reference().Value, counter, req.Instance, req.Value)
	reply(w, 200, map[string]any{"entity": entity.Reference().Value, "counter": counter})
}

// migrate moves a VM to another host as DRS does: runtime.host changes and a DrsVmMigratedEvent is posted.
func migrate(vm *simulator.VirtualMachine, dest *simulator.HostSystem) {
	source := *vm.Runtime.Host
	simulator.Map.WithLock(vm, func() {
		simulator.Map.Update(vm, []types.PropertyChange{
			{Name: "runtime.host", Val: dest.Self},
			{Name: "summary.runtime.host", Val: dest.Self},
		})
	})
	if old, ok := simulator.Map.Get(source).(*simulator.HostSystem); ok {
		simulator.Map.RemoveReference(old, &old.Vm, vm.Self)
	}
	simulator.Map.AddReference(dest, &dest.Vm, vm.Self)
	event := &types.DrsVmMigratedEvent{VmMigratedEvent: types.VmMigratedEvent{
		VmEvent:    types.VmEvent{Event: types.Event{Vm: &types.VmEventArgument{Vm: vm.Self, EntityEventArgument: types.EntityEventArgument{Name: vm.Name}}, Host: &types.HostEventArgument{Host: dest.Self, EntityEventArgument: types.EntityEventArgument{Name: dest.Name}}}},
		SourceHost: types.HostEventArgument{Host: source, EntityEventArgument: types.EntityEventArgument{Name: simulator.Map.Get(source).(mo.Entity).Entity().Name}},
	}}
	ctx := &simulator.Context{Context: context.Background(), Map: simulator.Map,
		Session: &simulator.Session{UserSession: types.UserSession{UserName: "vpxd-drs"}, Registry: simulator.Map}}
	simulator.Map.EventManager().PostEvent(ctx, &types.PostEvent{EventToPost: event})
}

func serveMigrate(w http.ResponseWriter, r *http.Request) {
	var req migrateRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		reply(w, 400, map[string]string{"error": err.Error()})
		return
	}
	vm, _ := find("VirtualMachine", req.VM).(*simulator.VirtualMachine)
	host, _ := find("HostSystem", req.Host).(*simulator.HostSystem)
	if vm == nil || host == nil {
		reply(w, 404, map[string]string{"error": "no such vm or host"})
		return
	}
	go func() {
		time.Sleep(time.Duration(req.DelayS * float64(time.Second)))
		migrate(vm, host)
	}()
	reply(w, 202, map[string]string{"vm": vm.Self.Value, "host": host.Self.Value})
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve the SDK and the control API on")
	clusters := flag.Int("cluster", 1, "clusters per datacenter")
	hosts := flag.Int("host", 3, "hosts per cluster")
	standalone := flag.Int("standalone-host", 0, "standalone hosts per datacenter")
	vms := flag.Int("vm", 2, "VMs per resource pool (cluster) and per standalone host")
	refresh := flag.Int("refresh", 20, "seconds per realtime sample (vCenter: 20)")
	maxMetrics := flag.Int("max-query-metrics", 256, "metrics (entity x counter) per QueryPerf call; 0 = no limit")
	user := flag.String("user", "user", "login user")
	password := flag.String("password", "pass", "login password")
	certFile := flag.String("tls-cert", "", "PEM certificate to serve (default: the simulator's own)")
	keyFile := flag.String("tls-key", "", "PEM key of -tls-cert")
	flag.Parse()

	model := simulator.VPX()
	model.Cluster, model.ClusterHost, model.Host, model.Machine = *clusters, *hosts, *standalone, *vms
	model.Autostart = true
	defer model.Remove()
	if err := model.Create(); err != nil {
		log.Fatalf("creating the inventory: %v", err)
	}
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *password)}
	model.Service.TLS = new(tls.Config)
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			log.Fatalf("loading -tls-cert: %v", err)
		}
		model.Service.TLS.Certificates = []tls.Certificate{cert}
	}

	stock := simulator.Map.Get(*model.ServiceContent.PerfManager).(*simulator.PerformanceManager)
	perf := &perfManager{PerformanceManager: *stock, refresh: int32(*refresh), maxMetrics: *maxMetrics,
		started: time.Now().Add(-2 * realtimeRetention * time.Second), history: map[string][]change{}, summation: map[int32]bool{}}
	for _, c := range perf.PerfCounter {
		perf.summation[c.Key] = c.RollupType == types.PerfSummaryTypeSummation
	}
	simulator.Map.Put(perf)
	options := simulator.Map.OptionManager()
	options.Setting = append(options.Setting, &types.OptionValue{Key: maxQueryMetricsOp, Value: strconv.Itoa(*maxMetrics)})

	model.Service.HandleFunc("/vtax/counter", perf.serveCounter)
	model.Service.HandleFunc("/vtax/migrate", serveMigrate)
	server := model.Service.NewServer()
	defer server.Close()

	control := *server.URL
	control.User, control.Path = nil, "/vtax"
	sdk := *server.URL
	sdk.User = nil
	names := make([]string, 0)
	for _, e := range simulator.Map.All("VirtualMachine") {
		names = append(names, e.Entity().Name)
	}
	sort.Strings(names)
	line, _ := json.Marshal(map[string]any{"url": sdk.String(), "control": control.String(), "vms": len(names)})
	fmt.Println(string(line))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
