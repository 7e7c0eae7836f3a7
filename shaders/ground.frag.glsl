#version 150
// Dark ground with a faint grid every `u_grid` units (10 ms of RTT by default).
uniform float u_grid;
uniform vec3 u_tint;
in vec2 v_world;
out vec4 o_color;

void main() {
    vec2 g = abs(fract(v_world / u_grid - 0.5) - 0.5) / fwidth(v_world / u_grid);
    float line = 1.0 - min(min(g.x, g.y), 1.0);
    o_color = vec4(u_tint + vec3(0.10, 0.13, 0.18) * line, 1.0);
}
