package apikey

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// PepperState is where a pepper stands in a rotation.
type PepperState string

// The states of a pepper. The list of a pepper file is in the order the peppers were introduced:
// AddPepper appends, PromotePepper moves the promoted pepper to the end. A pepper after the
// current one is pending (added: keys hashed with it verify, none is hashed with it yet); a
// pepper before it is older (keys hashed with it verify, and each is re-digested under the
// current pepper the next time it verifies). A version that stored keys name but the set does
// not hold is unknown (those keys no longer verify).
const (
	PepperCurrent PepperState = "current"
	PepperPending PepperState = "pending"
	PepperOlder   PepperState = "older"
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
	state := PepperOlder
	for _, e := range pf.Peppers {
		s := state
		if e.Version == pf.Current {
			s, state = PepperCurrent, PepperPending
		}
		info.Peppers = append(info.Peppers, PepperFileEntry{Version: e.Version, CreatedAt: e.CreatedAt, State: s})
	}
	return info
}

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
		i := slices.IndexFunc(pf.Peppers, func(e pepperEntry) bool { return e.Version == version })
		if i < 0 {
			return fmt.Errorf("pepper %q is not in the pepper file", version)
		}
		e := pf.Peppers[i]
		pf.Peppers = append(slices.Delete(pf.Peppers, i, i+1), e)
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
		i := slices.IndexFunc(pf.Peppers, func(e pepperEntry) bool { return e.Version == version })
		if i < 0 {
			return fmt.Errorf("pepper %q is not in the pepper file", version)
		}
		pf.Peppers = slices.Delete(pf.Peppers, i, i+1)
		return nil
	})
}

// updatePepperFile applies change to the pepper file at path under an exclusive lock on its
// directory (concurrent commands follow one another rather than lose an update), checks that
// the result is a valid set, and replaces the file atomically (0600, synced, renamed).
func updatePepperFile(path string, change func(pf *pepperFile) error) error {
	unlock, err := lockDir(filepath.Dir(path))
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

// lockDir takes an exclusive advisory lock (flock) on dir and returns its release. Locking the
// directory rather than the file survives the rename that replaces the file, and leaves no lock
// file behind.
func lockDir(dir string) (func(), error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open directory %s: %w", dir, err)
	}
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX); err != nil {
		d.Close()
		return nil, fmt.Errorf("lock directory %s: %w", dir, err)
	}
	return func() {
		_ = syscall.Flock(int(d.Fd()), syscall.LOCK_UN)
		d.Close()
	}, nil
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
