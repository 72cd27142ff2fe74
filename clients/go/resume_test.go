package htk_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	htk "htk.dev/client/go"
	processesv1 "htk.dev/client/go/gen/htk/processes/v1"
)

// While the worker is down Envoy answers Unavailable: an update is retried
// this many times, a pause apart, which outlasts a restart on a loaded
// machine.
const (
	updateAttempts = 240
	updatePause    = 500 * time.Millisecond
)

// updateRetried sends an update, retried while the API is unavailable; its
// idempotency key makes a retry harmless.
func updateRetried(ctx context.Context, client *htk.Client, request *processesv1.UpdateProcessRequest) error {
	key := fmt.Sprintf("%s-%s-%d", request.ProcessId, request.Type, request.GetPercent())
	keyed := metadata.AppendToOutgoingContext(ctx, "idempotency-key", key)
	for attempt := 1; ; attempt++ {
		_, err := client.Processes.UpdateProcess(keyed, request)
		if err == nil {
			return nil
		}
		if status.Code(err) != codes.Unavailable || attempt == updateAttempts {
			return fmt.Errorf("update %v: %w", request, err)
		}
		time.Sleep(updatePause)
	}
}

// TestWatchResumesAfterTheWorkerIsKilled kills (SIGKILL) the only worker of
// the stack, named by HTK_WORKER_PID, mid-stream; tests/chaos/test_client_resume.py
// starts such a stack and sets it.
func TestWatchResumesAfterTheWorkerIsKilled(t *testing.T) {
	workerPid, err := strconv.Atoi(os.Getenv("HTK_WORKER_PID"))
	if err != nil {
		t.Skip("HTK_WORKER_PID is not set")
	}
	client := dial(t, token)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	created, err := client.Processes.CreateProcess(ctx, &processesv1.CreateProcessRequest{
		Namespace: "go-client",
		Name:      uniqueName("resumed watch"),
		StepDefs:  []*processesv1.StepDef{{Key: "build", Label: "Build"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	update := func(request *processesv1.UpdateProcessRequest) error {
		request.ProcessId = created.ProcessId
		return updateRetried(ctx, client, request)
	}

	// The watch hands each message over and waits for the next read, so the
	// test knows what it has received before it kills the worker.
	type received struct {
		message *processesv1.WatchProcessResponse
		err     error
	}
	messages := make(chan received)
	var states []htk.WatchState
	go func() {
		defer close(messages)
		watch := client.Watch(ctx, &processesv1.WatchProcessRequest{ProcessId: created.ProcessId},
			htk.WithBackoff(200*time.Millisecond, 2*time.Second), htk.WithAttempts(200),
			htk.WithStateFunc(func(state htk.WatchState) { states = append(states, state) }))
		for message, err := range watch {
			messages <- received{message, err}
		}
	}()
	next := func() *processesv1.WatchProcessResponse {
		t.Helper()
		got, ok := <-messages
		if !ok || got.err != nil {
			t.Fatalf("the watch ended early: %v", got.err)
		}
		return got.message
	}

	if snapshot := next(); snapshot.GetProcess().GetProcessId() != created.ProcessId {
		t.Fatalf("the first message is the snapshot, got %v", snapshot)
	}
	var events [][2]string
	record := func(message *processesv1.WatchProcessResponse) {
		event := message.GetEvent()
		events = append(events, [2]string{strconv.Itoa(int(event.Seq)), event.Type})
	}
	for _, request := range []*processesv1.UpdateProcessRequest{
		{Type: "step_started", Step: proto.String("build")},
		{Type: "progress", Step: proto.String("build"), Percent: proto.Int32(10)},
	} {
		if err := update(request); err != nil {
			t.Fatal(err)
		}
		record(next())
	}

	if err := syscall.Kill(workerPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The updates go on beside the watch; one that fails ends the watch too.
	updated := make(chan error, 1)
	go func() {
		var requests []*processesv1.UpdateProcessRequest
		for _, percent := range []int32{20, 40, 60, 80} {
			requests = append(requests, &processesv1.UpdateProcessRequest{Type: "progress", Step: proto.String("build"), Percent: proto.Int32(percent)})
		}
		requests = append(requests, &processesv1.UpdateProcessRequest{Type: "step_completed", Step: proto.String("build")}, &processesv1.UpdateProcessRequest{Type: "completed"})
		for _, request := range requests {
			if err := update(request); err != nil {
				cancel()
				updated <- err
				return
			}
		}
		updated <- nil
	}()
	for got := range messages {
		if got.err != nil {
			t.Fatalf("the watch failed: %v (updates: %v)", got.err, <-updated)
		}
		record(got.message)
	}
	if err := <-updated; err != nil {
		t.Fatal(err)
	}

	want := [][2]string{
		{"1", "step_started"}, {"2", "progress"}, {"3", "progress"}, {"4", "progress"},
		{"5", "progress"}, {"6", "progress"}, {"7", "step_completed"}, {"8", "completed"},
	}
	if !slices.Equal(events, want) {
		t.Fatalf("every event exactly once, in order: want %v, got %v", want, events)
	}
	if !slices.Contains(states, htk.Reconnecting) {
		t.Fatalf("the watch never broke: %v", states)
	}
}
