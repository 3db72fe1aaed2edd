package apikey

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/nops-kernel/nops/internal/keyfile"
)

// PepperState is where a pepper stands in a rotation (keyfile.State, and unknown).
type PepperState = keyfile.State

// The states of a pepper. The list of a pepper file is in the order the peppers were introduced:
// AddPepper appends, PromotePepper moves the promoted pepper to the end. A pepper after the
// current one is pending (added: keys hashed with it verify, none is hashed with it yet); a
// pepper before it is older (keys hashed with it verify, and each is re-digested under the
// current pepper the next time it verifies). A version that stored keys name but the set does
// not hold is unknown (those keys no longer verify).
const (
	PepperCurrent             = keyfile.StateCurrent
	PepperPending             = keyfile.StatePending
	PepperOlder               = keyfile.StateOlder
	PepperUnknown PepperState = "unknown"
)

// PepperRing is a set of peppers as the Service uses it: the peppers, and the versions pending
// promotion, which keys are never re-digested away from (another replica may already hash with
// them as its current pepper).
type PepperRing struct {
	Peppers Peppers
	Pending []string
}

// PepperFileInfo describes a pepper file without its keys.
type PepperFileInfo struct {
	Current string
	Peppers []PepperFileEntry // in file order
}

// PepperFileEntry describes one pepper of a pepper file.
type PepperFileEntry struct {
	Version   string
	CreatedAt time.Time
	State     PepperState
}

// ErrPepperPending is returned by AddPepper while a pepper added earlier is still pending.
var ErrPepperPending = errors.New("a pepper added earlier is not current yet")

func (pf pepperFile) info() PepperFileInfo {
	info := PepperFileInfo{Current: pf.Current}
	versions := make([]string, len(pf.Peppers))
	for i, e := range pf.Peppers {
		versions[i] = e.Version
	}
	for i, st := range keyfile.States(versions, pf.Current) {
		e := pf.Peppers[i]
		info.Peppers = append(info.Peppers, PepperFileEntry{Version: e.Version, CreatedAt: e.CreatedAt, State: st})
	}
	return info
}

func pepperVersion(e pepperEntry) string { return e.Version }

func (pf pepperFile) ring() (PepperRing, error) {
	ps, err := pf.peppers()
	if err != nil {
		return PepperRing{}, err
	}
	r := PepperRing{Peppers: ps}
	for _, e := range pf.info().Peppers {
		if e.State == PepperPending {
			r.Pending = append(r.Pending, e.Version)
		}
	}
	return r, nil
}

// LoadOrCreatePepperRing is LoadOrCreatePepper returning the pending versions too.
func LoadOrCreatePepperRing(path string) (PepperRing, error) {
	if _, err := LoadOrCreatePepper(path); err != nil {
		return PepperRing{}, err
	}
	_, pf, err := readPepperFile(path)
	if err != nil {
		return PepperRing{}, err
	}
	r, err := pf.ring()
	if err != nil {
		return PepperRing{}, fmt.Errorf("pepper file %s: %w", path, err)
	}
	return r, nil
}

// ReadPepperFileInfo reads the pepper file at path (checking it as LoadOrCreatePepper does) and
// describes its peppers.
func ReadPepperFileInfo(path string) (PepperFileInfo, error) {
	_, pf, err := readPepperFile(path)
	if err != nil {
		return PepperFileInfo{}, err
	}
	if _, err := pf.peppers(); err != nil {
		return PepperFileInfo{}, fmt.Errorf("pepper file %s: %w", path, err)
	}
	return pf.info(), nil
}

// AddPepper adds a generated 32-byte pepper to the file at path without making it current:
// replicas that load the file verify keys hashed with it, and no key is hashed with it until
// PromotePepper. It returns the new version ("v<n+1>"). While a pepper added earlier is still
// pending it adds nothing and returns an error wrapping ErrPepperPending.
func AddPepper(path string) (string, error) {
	var version string
	err := updatePepperFile(path, func(pf *pepperFile) error {
		for _, e := range pf.info().Peppers {
			if e.State == PepperPending {
				return fmt.Errorf("pepper %s: %w (promote or retire it first)", e.Version, ErrPepperPending)
			}
		}
		key, err := generatePepperKey()
		if err != nil {
			return err
		}
		version = nextPepperVersion(pf)
		pf.Peppers = append(pf.Peppers, pepperEntry{Version: version, Key: key, CreatedAt: nowSecond()})
		return nil
	})
	return version, err
}

// PromotePepper makes version the current pepper of the file at path (new and rotated keys are
// hashed with it, and keys of the other peppers are re-digested under it as they verify) and
// moves it to the end of the list. It returns the version that was current. Promoting the
// current pepper changes nothing.
func PromotePepper(path, version string) (previous string, err error) {
	err = updatePepperFile(path, func(pf *pepperFile) error {
		previous = pf.Current
		var ok bool
		if pf.Peppers, ok = keyfile.Promote(pf.Peppers, version, pepperVersion); !ok {
			return fmt.Errorf("pepper %q is not in the pepper file", version)
		}
		pf.Current = version
		return nil
	})
	return previous, err
}

// RetirePepper removes version from the pepper file at path: keys still hashed with it stop
// verifying on a replica that loaded the new file. The current pepper cannot be retired. The
// caller checks that no key uses version any more (PepperStatusOf, `nops secrets pepper retire`).
func RetirePepper(path, version string) error {
	return updatePepperFile(path, func(pf *pepperFile) error {
		if version == pf.Current {
			return fmt.Errorf("pepper %s is current: promote another pepper first", version)
		}
		var ok bool
		if pf.Peppers, ok = keyfile.Remove(pf.Peppers, version, pepperVersion); !ok {
			return fmt.Errorf("pepper %q is not in the pepper file", version)
		}
		return nil
	})
}

// updatePepperFile applies change to the pepper file at path under an exclusive lock on its
// directory (concurrent commands follow one another rather than lose an update), checks that
// the result is a valid set, and replaces the file atomically (0600, synced, renamed).
func updatePepperFile(path string, change func(pf *pepperFile) error) error {
	unlock, err := keyfile.LockDir(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer unlock()
	_, pf, err := readPepperFile(path)
	if err != nil {
		return err
	}
	if err := change(&pf); err != nil {
		return fmt.Errorf("pepper file %s: %w", path, err)
	}
	if _, err := pf.peppers(); err != nil {
		return fmt.Errorf("pepper file %s: %w", path, err)
	}
	return writePepperFile(path, pf, true)
}

// ReadPepperRing reads the pepper file at path without creating it, and returns its set and a
// description of its peppers.
func ReadPepperRing(path string) (PepperRing, PepperFileInfo, error) {
	_, pf, err := readPepperFile(path)
	if err != nil {
		return PepperRing{}, PepperFileInfo{}, err
	}
	r, err := pf.ring()
	if err != nil {
		return PepperRing{}, PepperFileInfo{}, fmt.Errorf("pepper file %s: %w", path, err)
	}
	return r, pf.info(), nil
}
