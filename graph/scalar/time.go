// Package scalar holds the GraphQL scalars whose wire format is part of the contract. It must not
// import anything of ours (gqlgen's generated code binds to it).
package scalar

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/99designs/gqlgen/graphql"
)

// MarshalTime writes t as an RFC 3339 string in UTC, whatever zone the database driver returned.
func MarshalTime(t time.Time) graphql.Marshaler {
	return graphql.WriterFunc(func(w io.Writer) {
		io.WriteString(w, strconv.Quote(t.UTC().Format(time.RFC3339Nano)))
	})
}

// UnmarshalTime reads an RFC 3339 string.
func UnmarshalTime(v any) (time.Time, error) {
	s, ok := v.(string)
	if !ok {
		return time.Time{}, fmt.Errorf("Time must be an RFC 3339 string")
	}
	return time.Parse(time.RFC3339Nano, s)
}
