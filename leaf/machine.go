package leaf

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/prometheus/procfs"
	"github.com/prometheus/procfs/blockdevice"
	"github.com/prometheus/prometheus/model/labels"
	"golang.org/x/sys/unix"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// MachineJob is the job label of the built-in collector's series.
const MachineJob = "canopy"

// Pseudo and container filesystems are not capacity a device has; the same
// exclusions node_exporter applies by default.
var (
	ignoredFSTypes    = regexp.MustCompile(`^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|erofs|sysfs|tracefs|tmpfs|ramfs)$`)
	ignoredMountPoint = regexp.MustCompile(`^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)`)
)

// MachineCollector reads CPU, memory, load, network, disk and filesystem
// figures from /proc and /sys with github.com/prometheus/procfs, under
// node_exporter's metric names so rules work the same whether a device runs
// node_exporter or not. It also derives the busy-core gauge from successive
// CPU readings. It is not safe for concurrent use.
type MachineCollector struct {
	proc  procfs.FS
	block blockdevice.FS

	lastCPU  procfs.CPUStat
	lastWall time.Time
}

// NewMachineCollector opens the proc and sys filesystems at the given mount
// points ("/proc", "/sys" on a normal system).
func NewMachineCollector(procPath, sysPath string) (*MachineCollector, error) {
	proc, err := procfs.NewFS(procPath)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", procPath, err)
	}
	block, err := blockdevice.NewFS(procPath, sysPath)
	if err != nil {
		return nil, fmt.Errorf("open block devices: %w", err)
	}
	return &MachineCollector{proc: proc, block: block}, nil
}

type sampleSink struct {
	id  Identity
	t   int64
	out []ScrapedSample
}

func (s *sampleSink) add(typ canopyv1.MetricType, name string, v float64, kv ...string) {
	b := labels.NewScratchBuilder(6 + len(kv)/2)
	b.Add(labels.MetricName, name)
	b.Add(LabelNode, s.id.Node)
	b.Add(LabelDC, s.id.DC)
	b.Add(LabelLevel, string(LevelMachine))
	b.Add(LabelJob, MachineJob)
	for i := 0; i+1 < len(kv); i += 2 {
		b.Add(kv[i], kv[i+1])
	}
	b.Sort()
	s.out = append(s.out, ScrapedSample{Labels: b.Labels(), Type: typ, T: s.t, V: v})
}

func (s *sampleSink) counter(name string, v float64, kv ...string) {
	s.add(canopyv1.MetricType_METRIC_TYPE_COUNTER, name, v, kv...)
}

func (s *sampleSink) gauge(name string, v float64, kv ...string) {
	s.add(canopyv1.MetricType_METRIC_TYPE_GAUGE, name, v, kv...)
}

// Collect reads every source once. A source that fails is skipped and its
// error returned beside what the others produced.
func (m *MachineCollector) Collect(id Identity, now time.Time) ([]ScrapedSample, error) {
	s := &sampleSink{id: id, t: now.UnixMilli()}
	errs := []error{
		m.cpu(s, now),
		m.memory(s),
		m.load(s),
		m.network(s),
		m.disks(s),
		m.filesystems(s),
	}
	return s.out, errors.Join(errs...)
}

func (m *MachineCollector) cpu(s *sampleSink, now time.Time) error {
	st, err := m.proc.Stat()
	if err != nil {
		return fmt.Errorf("cpu: %w", err)
	}
	for cpu, c := range st.CPU {
		id := strconv.FormatInt(cpu, 10)
		for _, mv := range []struct {
			mode string
			v    float64
		}{
			{"user", c.User}, {"nice", c.Nice}, {"system", c.System}, {"idle", c.Idle},
			{"iowait", c.Iowait}, {"irq", c.IRQ}, {"softirq", c.SoftIRQ}, {"steal", c.Steal},
		} {
			s.counter("node_cpu_seconds_total", mv.v, "cpu", id, "mode", mv.mode)
		}
	}
	s.gauge("canopy_machine_cpu_cores", float64(len(st.CPU)))
	total := st.CPUTotal
	if !m.lastWall.IsZero() {
		wall := now.Sub(m.lastWall).Seconds()
		busy := (cpuSum(total) - total.Idle - total.Iowait) - (cpuSum(m.lastCPU) - m.lastCPU.Idle - m.lastCPU.Iowait)
		if wall > 0 && busy >= 0 {
			s.gauge("canopy_machine_cpu_busy_cores", busy/wall)
		}
	}
	m.lastCPU, m.lastWall = total, now
	return nil
}

func cpuSum(c procfs.CPUStat) float64 {
	return c.User + c.Nice + c.System + c.Idle + c.Iowait + c.IRQ + c.SoftIRQ + c.Steal
}

func (m *MachineCollector) memory(s *sampleSink) error {
	mi, err := m.proc.Meminfo()
	if err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	for _, f := range []struct {
		name string
		v    *uint64
	}{
		{"MemTotal", mi.MemTotalBytes}, {"MemFree", mi.MemFreeBytes}, {"MemAvailable", mi.MemAvailableBytes},
		{"Buffers", mi.BuffersBytes}, {"Cached", mi.CachedBytes},
		{"SwapTotal", mi.SwapTotalBytes}, {"SwapFree", mi.SwapFreeBytes},
	} {
		if f.v != nil {
			s.gauge("node_memory_"+f.name+"_bytes", float64(*f.v))
		}
	}
	return nil
}

func (m *MachineCollector) load(s *sampleSink) error {
	l, err := m.proc.LoadAvg()
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	s.gauge("node_load1", l.Load1)
	s.gauge("node_load5", l.Load5)
	s.gauge("node_load15", l.Load15)
	return nil
}

func (m *MachineCollector) network(s *sampleSink) error {
	nd, err := m.proc.NetDev()
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	for dev, l := range nd {
		s.counter("node_network_receive_bytes_total", float64(l.RxBytes), "device", dev)
		s.counter("node_network_transmit_bytes_total", float64(l.TxBytes), "device", dev)
		s.counter("node_network_receive_packets_total", float64(l.RxPackets), "device", dev)
		s.counter("node_network_transmit_packets_total", float64(l.TxPackets), "device", dev)
	}
	return nil
}

func (m *MachineCollector) disks(s *sampleSink) error {
	ds, err := m.block.ProcDiskstats()
	if err != nil {
		return fmt.Errorf("disks: %w", err)
	}
	const sector = 512 // /proc/diskstats counts 512-byte sectors whatever the device
	for _, d := range ds {
		if d.IOsTotalTicks == 0 && d.ReadIOs == 0 && d.WriteIOs == 0 {
			continue // never used (loop devices, empty drives)
		}
		s.counter("node_disk_read_bytes_total", float64(d.ReadSectors*sector), "device", d.DeviceName)
		s.counter("node_disk_written_bytes_total", float64(d.WriteSectors*sector), "device", d.DeviceName)
		s.counter("node_disk_io_time_seconds_total", float64(d.IOsTotalTicks)/1000, "device", d.DeviceName)
	}
	return nil
}

func (m *MachineCollector) filesystems(s *sampleSink) error {
	mounts, err := m.proc.GetMounts()
	if err != nil {
		return fmt.Errorf("filesystems: %w", err)
	}
	seen := map[string]bool{}
	var errs []error
	for _, mnt := range mounts {
		if ignoredFSTypes.MatchString(mnt.FSType) || ignoredMountPoint.MatchString(mnt.MountPoint) || seen[mnt.MountPoint] {
			continue
		}
		seen[mnt.MountPoint] = true
		var st unix.Statfs_t
		if err := unix.Statfs(mnt.MountPoint, &st); err != nil {
			errs = append(errs, fmt.Errorf("statfs %s: %w", mnt.MountPoint, err))
			continue
		}
		bs := float64(st.Bsize)
		kv := []string{"device", mnt.Source, "fstype", mnt.FSType, "mountpoint", mnt.MountPoint}
		s.gauge("node_filesystem_size_bytes", float64(st.Blocks)*bs, kv...)
		s.gauge("node_filesystem_free_bytes", float64(st.Bfree)*bs, kv...)
		s.gauge("node_filesystem_avail_bytes", float64(st.Bavail)*bs, kv...)
	}
	return errors.Join(errs...)
}
