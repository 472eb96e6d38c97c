package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dbproxy/dbproxy/internal/model"
)

// tfNoChangeApplies is how many applies with nothing to change are timed:
// Terraform's own start, the provider's start and the refresh, the floor
// under every apply.
const tfNoChangeApplies = 3

// tfStage is `terraform apply` of a changed pool setting, on the fleet of
// the propagation phase's first stage (the control plane and three node
// processes), through the provider the bench's dbproxy binary serves.
type tfStage struct {
	// Terraform is the first line of `terraform version`.
	Terraform string `json:"terraform,omitempty"`
	// Skipped says why the stage did not run (no terraform on PATH).
	Skipped   string `json:"skipped,omitempty"`
	Changes   int    `json:"changes"`
	Completed int    `json:"completed"`
	// Total runs from the start of the terraform apply command until the
	// rollout API reports that every node acked the change (the provider
	// waits for that before apply returns, so the check after it returns at
	// once); Apply is the command alone.
	Total     latencyStats `json:"apply_to_all_acked_ms"`
	Apply     latencyStats `json:"apply_command_ms"`
	SamplesMs []float64    `json:"samples_ms"`
	// NoChange is an apply whose plan is empty.
	NoChange latencyStats `json:"no_change_apply_ms"`
}

// tfWorkspace is a Terraform working directory whose dbproxy provider is
// the bench's binary (dev_overrides) and whose configuration manages the
// bench proxy's target group.
type tfWorkspace struct {
	bin, dir, log string
	env           []string
}

// propagateTerraform times b.o.tfChanges applies of a changed init_query,
// numbering the changes after seq as propagate does (so the final check
// through the nodes still holds), and returns the last number used.
func (b *bench) propagateTerraform(ctx context.Context, cp *cpProc, st *tfStage, seq int) (int, error) {
	tf, err := exec.LookPath("terraform")
	if err != nil {
		st.Skipped = "terraform is not on PATH"
		b.logf("propagation: terraform is not on PATH; the terraform apply stage is skipped")
		return seq, nil
	}
	if out, err := exec.CommandContext(ctx, tf, "version").Output(); err == nil {
		st.Terraform, _, _ = strings.Cut(string(out), "\n")
	}
	w, err := b.tfWorkspace(tf, cp)
	if err != nil {
		return seq, err
	}
	// The commands' output goes next to the results once the stage ends.
	defer b.keepFile(w.log)
	initQuery := func(k int) string { return "SET @@session.wait_timeout=" + strconv.Itoa(propWaitTimeoutBase+k) }

	// The proxy's target group exists (the API made it); Terraform takes it
	// over by import, then the first apply brings it to the configuration.
	seq++
	if err := w.run(ctx, "import", "-input=false", "-no-color", "-var", "init_query="+initQuery(seq), "dbproxy_target_group.bench", proxyName); err != nil {
		return seq, err
	}
	if err := w.run(ctx, "apply", "-auto-approve", "-input=false", "-no-color", "-var", "init_query="+initQuery(seq)); err != nil {
		return seq, err
	}

	zones := propZones()
	var totals, applies, noChange []time.Duration
	for range b.o.tfChanges {
		seq++
		start := time.Now()
		if err := w.run(ctx, "apply", "-auto-approve", "-input=false", "-no-color", "-var", "init_query="+initQuery(seq)); err != nil {
			return seq, fmt.Errorf("change %d: %w", seq, err)
		}
		apply := time.Since(start)
		var g model.TargetGroup
		if err := cp.client.Do(ctx, http.MethodGet, "/v1/proxies/"+proxyName+"/target-group", nil, &g); err != nil {
			return seq, fmt.Errorf("change %d: read the target group: %w", seq, err)
		}
		if g.ConnectionPoolConfig.InitQuery != initQuery(seq) {
			return seq, fmt.Errorf("change %d: after terraform apply the target group's init_query is %q, want %q", seq, g.ConnectionPoolConfig.InitQuery, initQuery(seq))
		}
		r, err := cp.client.WaitRollout(ctx, g.Revision, zones, propRolloutWait)
		total := time.Since(start)
		if err != nil {
			return seq, fmt.Errorf("change %d: rollout of revision %d: %w", seq, g.Revision, err)
		}
		st.Changes++
		if !r.Complete {
			b.fail("propagation: terraform apply of change %d returned, but revision %d is not acked by every node: %s", seq, g.Revision, r.Message)
			continue
		}
		st.Completed++
		totals, applies = append(totals, total), append(applies, apply)
		st.SamplesMs = append(st.SamplesMs, ms(total))
	}
	for range tfNoChangeApplies {
		start := time.Now()
		if err := w.run(ctx, "apply", "-auto-approve", "-input=false", "-no-color", "-var", "init_query="+initQuery(seq)); err != nil {
			return seq, fmt.Errorf("apply with no change: %w", err)
		}
		noChange = append(noChange, time.Since(start))
	}
	st.Total, st.Apply, st.NoChange = summarize(totals), summarize(applies), summarize(noChange)
	return seq, nil
}

// tfWorkspace writes the CLI configuration, the plugin directory and the
// configuration of the Terraform stage under b.tmp.
func (b *bench) tfWorkspace(tf string, cp *cpProc) (*tfWorkspace, error) {
	root := filepath.Join(b.tmp, "terraform")
	plugins, dir := filepath.Join(root, "plugins"), filepath.Join(root, "work")
	for _, d := range []string{plugins, dir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// dev_overrides wants a directory holding terraform-provider-dbproxy;
	// the one binary serves the provider when Terraform starts it.
	if err := os.Symlink(b.nodeBin, filepath.Join(plugins, "terraform-provider-dbproxy")); err != nil {
		return nil, fmt.Errorf("plugin directory: %w", err)
	}
	rc := filepath.Join(root, "terraformrc")
	cli := fmt.Sprintf("provider_installation {\n  dev_overrides {\n    %q = %q\n  }\n  direct {}\n}\n", "dbproxy/dbproxy", plugins)
	if err := os.WriteFile(rc, []byte(cli), 0o600); err != nil {
		return nil, err
	}
	// The same pool settings as poolChange, so that only init_query changes.
	cfg := fmt.Sprintf(`terraform {
  required_providers {
    dbproxy = {
      source = "dbproxy/dbproxy"
    }
  }
}

provider "dbproxy" {
  credentials_file = %q
}

variable "init_query" {
  type = string
}

resource "dbproxy_target_group" "bench" {
  proxy_name = %q

  connection_pool_config {
    max_connections_percent   = 10
    connection_borrow_timeout = 60
    init_query                = var.init_query
  }
}
`, cp.credsFile, proxyName)
	if err := os.WriteFile(filepath.Join(dir, "main.tf"), []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	w := &tfWorkspace{bin: tf, dir: dir, log: filepath.Join(b.tmp, "terraform.log"),
		env: append(os.Environ(), "TF_CLI_CONFIG_FILE="+rc, "TF_IN_AUTOMATION=1", "CHECKPOINT_DISABLE=1")}
	return w, nil
}

// run runs one terraform command in the workspace, appending its output
// to the stage's log; an error carries the output's last lines.
func (w *tfWorkspace) run(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, w.bin, args...)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = w.dir, w.env, &out, &out
	err := cmd.Run()
	if f, ferr := os.OpenFile(w.log, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600); ferr == nil {
		fmt.Fprintf(f, "$ terraform %s\n%s\n", strings.Join(args, " "), out.Bytes())
		f.Close()
	}
	if err != nil {
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		return fmt.Errorf("terraform %s: %w\n%s", args[0], err, strings.Join(lines[max(0, len(lines)-15):], "\n"))
	}
	return nil
}
