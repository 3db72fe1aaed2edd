package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// errNoNginx means the nginx binary was not found.
var errNoNginx = errors.New("nginx not found")

// findNginx returns the nginx binary: path when it names one, else nginx on PATH or in
// /usr/sbin (where Debian installs it, often outside a user's PATH).
func findNginx(path string) (string, error) {
	if path != "" && path != "nginx" {
		if _, err := os.Stat(path); err != nil {
			return "", fmt.Errorf("%w at %s: %v", errNoNginx, path, err)
		}
		return path, nil
	}
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx", nil
	}
	return "", errNoNginx
}

// nginxConfig is a reverse proxy to upstream (host:port) listening on listen (host:port), with
// HTTP/1.1 and a pool of keep-alive connections to the upstream, as nginx is deployed in front of
// HTTP services. Logs, temporary files and the pid file stay under dir.
func nginxConfig(dir, listen, upstream string) string {
	return fmt.Sprintf(`# Written by bench/invoke: nginx as a plain reverse proxy to one agent.
worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;

events {
    worker_connections 8192;
}

http {
    access_log off;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;

    upstream agent {
        server %[3]s;
        keepalive 512;
        keepalive_requests 1000000;
        keepalive_timeout 120s;
    }

    server {
        listen %[2]s;
        location / {
            proxy_pass http://agent;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`, dir, listen, upstream)
}

// proxy is a running nginx.
type proxy struct {
	url  string
	cmd  *exec.Cmd
	dir  string
	done chan error
}

// startNginx writes a config proxying to upstream into a temporary directory and starts nginx
// on it in the foreground (-g 'daemon off;') as a child process. The listening socket is bound
// here on 127.0.0.1:0 and handed to nginx as an inherited socket (the NGINX environment
// variable, nginx's binary-upgrade mechanism), so no port is reserved and released.
func startNginx(ctx context.Context, bin, upstream string, stderr io.Writer) (*proxy, error) {
	dir, err := os.MkdirTemp("", "nops-bench-nginx-")
	if err != nil {
		return nil, err
	}
	// Worker processes run as nobody when nginx starts as root; let them traverse the directory.
	if err := os.Chmod(dir, 0o755); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	lnFile, err := ln.(*net.TCPListener).File()
	_ = ln.Close() // the duplicate in lnFile keeps the socket
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	defer lnFile.Close() // nginx has its own copy once started
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(nginxConfig(dir, ln.Addr().String(), upstream)), 0o644); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	cmd := exec.Command(bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf, "-g", "daemon off;")
	cmd.ExtraFiles = []*os.File{lnFile} // fd 3 in the child
	cmd.Env = append(childEnv(os.Environ()), "NGINX=3;")
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM} // no orphan nginx if the bench dies
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start nginx: %w", err)
	}
	p := &proxy{url: "http://" + ln.Addr().String(), cmd: cmd, dir: dir, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	if err := p.waitReady(ctx); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		p.stop()
		return nil, fmt.Errorf("nginx not ready: %w; error.log: %s", err, strings.TrimSpace(string(log)))
	}
	return p, nil
}

// waitReady polls a proxied request until the agent's answer comes back through nginx.
func (p *proxy) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	var last error
	client := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	for time.Now().Before(deadline) {
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("nginx exited: %v", err)
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.url+"/invoke/bench.echo", strings.NewReader(requestBody))
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("no answer within 15s: %v", last)
}

// stop asks nginx to quit fast (SIGTERM), kills it after 10 s, and removes its directory.
func (p *proxy) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	_ = os.RemoveAll(p.dir)
}
