package mounts

import (
	"os"

	"golang.org/x/sys/unix"
)

// Open opens the folder itself for reading, beneath the descriptor that
// holds it (a symlink swapped in for its path since is not followed): to
// list its entries, or to lock it.
func (d *Dir) Open() (*os.File, error) {
	fd, err := openBeneath(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, pathError("open", d.path, err)
	}
	return os.NewFile(uintptr(fd), d.path), nil
}
