#version 150
uniform vec3 u_ground;
uniform vec3 u_fog_color;
in float v_fog;
out vec4 o_color;

void main() {
    o_color = vec4(mix(u_ground * 1.22, u_fog_color, v_fog), 1.0);
}
