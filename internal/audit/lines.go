package audit

import (
	"bufio"
	"errors"
	"io"
)

// errStop ends eachLine early without an error.
var errStop = errors.New("stop")

// eachLine calls fn with every line of r, including its trailing newline
// (the last line may lack one), reusing a 1 MiB buffer so that multi-GB
// logs stream; longer lines are joined. fn returning errStop ends the scan
// with a nil error.
func eachLine(r io.Reader, fn func(line []byte) error) error {
	br := bufio.NewReaderSize(r, 1<<20)
	var long []byte
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, line...)
			continue
		}
		if long != nil {
			line = append(long, line...)
			long = nil
		}
		if err != nil && err != io.EOF {
			return err
		}
		if len(line) > 0 {
			if ferr := fn(line); ferr != nil {
				if ferr == errStop {
					return nil
				}
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
	}
}
