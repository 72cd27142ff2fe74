package htk_test

// These tests run against a real htk through Envoy: HTK_URL (e.g.
// http://localhost:8080) and HTK_TOKEN (a token with the scopes
// processes:write and tasks:complete) name it. `make test` starts a stack and runs them (tests/e2e/test_clients.py).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	htk "htk.dev/client/go"
	processesv1 "htk.dev/client/go/gen/htk/processes/v1"
)

// approverToken is a person's (tasks:complete): the token that drives a
// process may not decide its tasks.
var serverURL, token, approverToken = os.Getenv("HTK_URL"), os.Getenv("HTK_TOKEN"), os.Getenv("HTK_APPROVER_TOKEN")

// dial connects to the htk the environment names; a test that needs one
// fails without it, while those that need none (the watch's rules against a
// scripted server) run anywhere.
func dial(t *testing.T, token string) *htk.Client {
	t.Helper()
	if serverURL == "" || token == "" || approverToken == "" {
		t.Fatal("set HTK_URL, HTK_TOKEN (a token with processes:write,tasks:complete) and HTK_APPROVER_TOKEN (another with tasks:complete) to run these tests against a running htk")
	}
	client, err := htk.Dial(serverURL, token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

func callContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func uniqueName(prefix string) string {
	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix)
	return prefix + "-" + hex.EncodeToString(suffix)
}

func TestDocumentedWorkflow(t *testing.T) {
	client, ctx := dial(t, token), callContext(t)
	name := uniqueName("Deploy v2.1.0")
	created, err := client.Processes.CreateProcess(ctx, &processesv1.CreateProcessRequest{
		Namespace: "go-client",
		Name:      name,
		StepDefs: []*processesv1.StepDef{
			{Key: "build", Label: "Build"},
			{Key: "test", Label: "Test"},
			{Key: "review", Label: "Review", Human: true},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if created.Status != "running" || len(created.TaskIds) != 1 {
		t.Fatalf("a new process is running with one task, got %v", created)
	}
	imageTag, err := structpb.NewStruct(map[string]any{"image_tag": "v2.1.0-abc123"})
	if err != nil {
		t.Fatal(err)
	}
	for _, update := range []*processesv1.UpdateProcessRequest{
		{Type: "step_started", Step: ptr("build"), Detail: ptr("Building Docker image...")},
		{Type: "progress", Step: ptr("build"), Message: ptr("Compiling..."), Percent: ptr[int32](50)},
		{Type: "step_completed", Step: ptr("build"), Detail: ptr("Build successful"), Data: imageTag},
		{Type: "step_started", Step: ptr("test")},
	} {
		update.ProcessId = created.ProcessId
		ack, err := client.Processes.UpdateProcess(ctx, update)
		if err != nil {
			t.Fatalf("%s: %v", update.Type, err)
		}
		if ack.UpdateType != update.Type {
			t.Fatalf("acknowledged %q for %q", ack.UpdateType, update.Type)
		}
	}

	page, err := client.Processes.ListProcesses(ctx, &processesv1.ListProcessesRequest{
		Status: "running", Namespace: created.Namespace, Search: name, Sort: "newest", Limit: ptr[int32](10),
	})
	if err != nil {
		t.Fatal(err)
	}
	if page.Total != 1 || page.Processes[0].ProcessId != created.ProcessId || page.Processes[0].StepCount != 3 {
		t.Fatalf("the list holds the process alone, got %v", page)
	}

	process, err := client.Processes.GetProcess(ctx, &processesv1.GetProcessRequest{ProcessId: created.ProcessId})
	if err != nil {
		t.Fatal(err)
	}
	build := process.Timeline[0]
	if process.GetCurrentStep() != "test" || build.Status != "completed" ||
		build.GetData().AsMap()["image_tag"] != "v2.1.0-abc123" || build.GetDurationMs() < 0 {
		t.Fatalf("the timeline shows the build done and the tests running, got %v", process)
	}

	if _, err := client.Processes.UpdateProcess(ctx, &processesv1.UpdateProcessRequest{
		ProcessId: created.ProcessId, Type: "completed", Summary: ptr("All done!"),
	}); err != nil {
		t.Fatal(err)
	}
	process, err = client.Processes.GetProcess(ctx, &processesv1.GetProcessRequest{ProcessId: created.ProcessId})
	if err != nil {
		t.Fatal(err)
	}
	if process.Status != "completed" || process.GetSummary() != "All done!" || process.FinishedAt == nil {
		t.Fatalf("the process is completed, got %v", process)
	}
}

func TestErrorsAreGRPCCodes(t *testing.T) {
	client, ctx := dial(t, token), callContext(t)
	created, err := client.Processes.CreateProcess(ctx, &processesv1.CreateProcessRequest{
		Namespace: "go-client", Name: uniqueName("errors"), StepDefs: []*processesv1.StepDef{{Key: "build", Label: "Build"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
	}{
		{"a missing process", func() error {
			_, err := client.Processes.GetProcess(ctx, &processesv1.GetProcessRequest{ProcessId: "00000000-0000-4000-8000-000000000000"})
			return err
		}, codes.NotFound},
		{"a percent out of range", func() error {
			_, err := client.Processes.UpdateProcess(ctx, &processesv1.UpdateProcessRequest{
				ProcessId: created.ProcessId, Type: "progress", Step: ptr("build"), Percent: ptr[int32](101),
			})
			return err
		}, codes.InvalidArgument},
		{"an unknown token", func() error {
			_, err := dial(t, "htk_not-a-token").Processes.ListProcesses(ctx, &processesv1.ListProcessesRequest{})
			return err
		}, codes.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if status.Code(err) != tc.code {
				t.Fatalf("want %v, got %v", tc.code, err)
			}
			if status.Convert(err).Message() == "" {
				t.Fatal("the error carries no message")
			}
		})
	}
}

func TestATaskIsApproved(t *testing.T) {
	client, ctx := dial(t, token), callContext(t)
	created, err := client.Processes.CreateProcess(ctx, &processesv1.CreateProcessRequest{
		Namespace: "go-client",
		Name:      uniqueName("gated"),
		StepDefs:  []*processesv1.StepDef{{Key: "review", Label: "Review", Human: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Processes.UpdateProcess(ctx, &processesv1.UpdateProcessRequest{
		ProcessId: created.ProcessId, Type: "step_started", Step: ptr("review"),
	}); err != nil {
		t.Fatal(err)
	}
	open, err := client.Tasks.ListTasks(ctx, &processesv1.ListTasksRequest{Status: "open", ProcessId: created.ProcessId})
	if err != nil {
		t.Fatal(err)
	}
	if len(open.Tasks) != 1 || open.Tasks[0].TaskId != created.TaskIds[0] {
		t.Fatalf("the review task is open, got %v", open)
	}
	// The token that drives the process cannot approve its gate, whatever its scopes.
	_, err = client.Tasks.CompleteTask(ctx, &processesv1.CompleteTaskRequest{TaskId: open.Tasks[0].TaskId, Outcome: "approved"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "separation of duties") {
		t.Fatalf("the pipeline's token cannot approve its own gate, got %v", err)
	}
	person := dial(t, approverToken)
	task, err := person.Tasks.CompleteTask(ctx, &processesv1.CompleteTaskRequest{
		TaskId: open.Tasks[0].TaskId, Outcome: "approved", Comment: ptr("LGTM"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if task.Status != "completed" || task.GetOutcome() != "approved" || task.GetComment() != "LGTM" {
		t.Fatalf("the task is approved, got %v", task)
	}
	process, err := client.Processes.GetProcess(ctx, &processesv1.GetProcessRequest{ProcessId: created.ProcessId})
	if err != nil {
		t.Fatal(err)
	}
	if process.Timeline[0].Status != "completed" || process.Timeline[0].GetCompletedBy() != task.GetCompletedBy() {
		t.Fatalf("the review step is completed by the approver, got %v", process.Timeline[0])
	}
	_, err = person.Tasks.CompleteTask(ctx, &processesv1.CompleteTaskRequest{TaskId: task.TaskId, Outcome: "rejected"})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a completed task cannot be completed again, got %v", err)
	}
}

func TestWatchProcessStreamsEachUpdateLiveUntilTheProcessCompletes(t *testing.T) {
	client, ctx := dial(t, token), callContext(t)
	created, err := client.Processes.CreateProcess(ctx, &processesv1.CreateProcessRequest{
		Namespace: "go-client", Name: uniqueName("watched"), StepDefs: []*processesv1.StepDef{{Key: "build", Label: "Build"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	updates := []*processesv1.UpdateProcessRequest{
		{Type: "step_started", Step: ptr("build"), Detail: ptr("Building Docker image...")},
		{Type: "progress", Step: ptr("build"), Message: ptr("Compiling..."), Percent: ptr[int32](50)},
		{Type: "step_completed", Step: ptr("build")},
		{Type: "completed", Summary: ptr("All done!")},
	}
	stream, err := client.Processes.WatchProcess(ctx, &processesv1.WatchProcessRequest{ProcessId: created.ProcessId})
	if err != nil {
		t.Fatal(err)
	}

	// Each update is sent only once the previous message has arrived, so every
	// event after the snapshot is one the stream delivered live.
	var snapshot *processesv1.Process
	var events []*processesv1.ProcessEvent
	for {
		message, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the stream failed after %d events: %v", len(events), err)
		}
		switch kind := message.Kind.(type) {
		case *processesv1.WatchProcessResponse_Heartbeat:
			continue
		case *processesv1.WatchProcessResponse_Process:
			if snapshot != nil || events != nil {
				t.Fatalf("a snapshot after the first message: %v", message)
			}
			snapshot = kind.Process
		case *processesv1.WatchProcessResponse_Event:
			events = append(events, kind.Event)
		default:
			t.Fatalf("an unexpected message: %v", message)
		}
		if next := len(events); next < len(updates) {
			updates[next].ProcessId = created.ProcessId
			if _, err := client.Processes.UpdateProcess(ctx, updates[next]); err != nil {
				t.Fatalf("%s: %v", updates[next].Type, err)
			}
		}
	}

	if snapshot == nil || snapshot.ProcessId != created.ProcessId || snapshot.Status != "running" {
		t.Fatalf("the stream begins with the running process, got %v", snapshot)
	}
	if len(events) != len(updates) {
		t.Fatalf("one event per update, got %v", events)
	}
	for i, event := range events {
		if event.Seq != int32(i+1) || event.Type != updates[i].Type || event.GetStep() != updates[i].GetStep() {
			t.Fatalf("event %d matches its update %v, got %v", i+1, updates[i], event)
		}
	}
	if events[1].GetMessage() != "Compiling..." || events[1].GetPercent() != 50 || events[3].GetSummary() != "All done!" {
		t.Fatalf("the events carry their updates' fields, got %v", events)
	}
}

func TestDialRefusesURLsItCannotUse(t *testing.T) {
	for _, bad := range []string{"localhost:8080", "ftp://localhost", "http://localhost:8080/api/v1", "http://"} {
		if _, err := htk.Dial(bad, token); err == nil {
			t.Errorf("Dial(%q) succeeded", bad)
		}
	}
}

func ptr[T any](value T) *T {
	return &value
}
