package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// stateFile keeps what must survive a restart: the node's role.
type stateFile struct{ dir string }

type state struct {
	Role string `json:"role"`
}

func (s *stateFile) path() string { return filepath.Join(s.dir, "state.json") }

func (s *stateFile) role() (canopyv1.Role, bool, error) {
	if s.dir == "" {
		return 0, false, nil
	}
	b, err := os.ReadFile(s.path())
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("node.state_dir: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return 0, false, fmt.Errorf("node.state_dir: %s: %w", s.path(), err)
	}
	r, ok := canopyv1.Role_value[st.Role]
	if !ok {
		return 0, false, fmt.Errorf("node.state_dir: %s: unknown role %q", s.path(), st.Role)
	}
	return canopyv1.Role(r), true, nil
}

// saveRole writes the role atomically (write, sync, rename).
func (s *stateFile) saveRole(r canopyv1.Role) error {
	if s.dir == "" {
		return nil
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return err
	}
	b, _ := json.Marshal(state{Role: r.String()})
	tmp := s.path() + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, s.path())
}
