package block

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
)

func TestMarkersJSON(t *testing.T) {
	id := ulid.MustParse("01JZ8Y4V6Q6G2W5R9T3K7M1N0P")
	at := time.Unix(1700000000, 0)
	for _, c := range []struct {
		v    any
		want string
	}{
		{NewDeletionMark(id, at, ""), `{"id":"01JZ8Y4V6Q6G2W5R9T3K7M1N0P","version":1,"deletion_time":1700000000}`},
		{NewNoCompactMark(id, at, NoCompactManual, "too big"), `{"id":"01JZ8Y4V6Q6G2W5R9T3K7M1N0P","version":1,"details":"too big","no_compact_time":1700000000,"reason":"manual"}`},
	} {
		b, err := json.Marshal(c.v)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != c.want {
			t.Errorf("got  %s\nwant %s", b, c.want)
		}
	}
}
